# Every test of the torpor conformance kit, run against dirstore.
from torpor.conformance.suite import *  # noqa: F403
