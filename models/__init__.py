"""Networks, nn.Modules only: generators, discriminators and encoders, one family per file
(`spade.py`, ...). Import from the file, e.g. `from models.spade import SPADEGenerator`."""
