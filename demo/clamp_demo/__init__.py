"""`make demo`: build a CLAMP policy with training/ and run it closed loop on the simulated ALOHA over DDS.

The top of the package graph: it uses clamp_training (to build the policy) and clamp_bringup (to start
the node graph), which is why it lives outside both.
"""
