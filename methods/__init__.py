"""NPAS methods (Shapeshifter Networks, SuperWeight Networks), each a plugin on the method contract."""
