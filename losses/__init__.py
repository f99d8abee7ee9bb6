"""Losses: pure functions or small modules that take tensors and return a tensor, unweighted
(the trainer applies the lambda_* weights). Import from the file, e.g.
`from losses.adversarial import gan_loss`."""
