"""Code that runs in the sandboxed processes: the zygote (fork server) and the workers.

Nothing here imports the grading engine or any check: a worker's memory holds the
interpreter, the preloaded libraries, this package and the student's code.
"""
