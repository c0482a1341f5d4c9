"""The torpor conformance kit (see its own issue; filled in there)."""
