"""The course's small ResNet: what the pretrained checkpoint of Unit 2 holds.

The worker builds it for the fine-tuning checks (weights travel from the checks),
the pretraining script trains it, and students load the checkpoint into it.
Imported on its own (not from `checklib/__init__`) because it imports torchvision.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

#: Channels of the stem and the four stages: ResNet-18's (64, 128, 256, 512) divided by four.
SMALL_WIDTHS = (16, 32, 64, 128)


class SmallResNet(ResNet):
    """torchvision's ResNet-18 layout (BasicBlocks, [2, 2, 2, 2]) at a quarter of its width.

    A subclass only to choose the widths, which torchvision's `ResNet.__init__` fixes;
    `_make_layer`, `forward` and the parameter names (`conv1`, `layer1.0.bn2`, `fc` ...)
    are torchvision's own, so code written for `resnet18()` works on it unchanged.
    About 0.7 M parameters instead of 11.7 M.
    """

    def __init__(self, num_classes: int, layers: tuple[int, ...] = (2, 2, 2, 2),
                 widths: tuple[int, ...] = SMALL_WIDTHS) -> None:
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = widths[0], 1, 1, 64
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(BasicBlock, widths[0], layers[0])
        self.layer2 = self._make_layer(BasicBlock, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(BasicBlock, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(BasicBlock, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def small_resnet(num_classes: int) -> SmallResNet:
    return SmallResNet(num_classes)
