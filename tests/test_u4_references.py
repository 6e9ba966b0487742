"""Unit 4's reference computations: shortcuts the checks take are exact."""

import torch

from autograder.checks.u4_recsys.common import ReferenceNeuMF, neumf_logit_matrix, reference_neumf_logits


def test_the_neumf_logit_matrix_by_parts_equals_every_pair_scored_alone():
    """Do the (U, I) logits computed by parts (the GMF half as a matrix product, the first MLP layer as a user and
    an item term) equal `reference_neumf_logits` on every (user, item) pair, for one, three and four hidden
    layers and more users than one block?"""
    U, I, k = 300, 40, 5
    for hiddens in ((6,), (8, 4, 3), (5, 7, 2, 3)):
        torch.manual_seed(len(hiddens))
        model = ReferenceNeuMF(k, U, I, hiddens).double()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.normal_(0.0, 0.7)
        params = {name: p.detach() for name, p in model.named_parameters()}
        pairwise = reference_neumf_logits(params, model.layers, torch.arange(U).repeat_interleave(I),
                                          torch.arange(I).repeat(U)).view(U, I)
        torch.testing.assert_close(neumf_logit_matrix(params, model.layers, U, I), pairwise, rtol=1e-12, atol=1e-12)
