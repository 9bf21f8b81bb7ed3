"""IsaacLab backend: `rlinf/IsaacLab-*` ids wrapping IsaacLab's GPU-batched envs (see adapter.py).

IsaacLab / Isaac Sim are imported only when such an env is made (launch.py).
"""
