"""The bottom package, imported by every layer and importing none of them: the one error base
(errors.py) and the formats shared by the node and the controller, low enough that neither
imports the other."""
