"""npas-lowrank: an example npasbench method package (see docs/writing-a-method.md)."""
