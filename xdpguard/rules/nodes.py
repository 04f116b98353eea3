"""Layout constants of the address-table nodes (struct xg_node / xg_snode).

Kept apart from stride.py, which needs numpy, so that the ABI mirror and
the rule-only apply path import them without loading numpy.
"""

NODE_BYTES = 1024
ROOT_NODES = 256  # elements 0-255: the root, indexed by the first address byte
DENSE_SLOTS = 256
SPARSE_RUNS = 12
SPARSE_BYTES = 64
SPARSE_PER_NODE = NODE_BYTES // SPARSE_BYTES  # 16
SPARSE_BOUND_OFF = 4 * SPARSE_RUNS  # val[12] then bound[12]

CHILD = 1 << 31
SPARSE = 1 << 30
INDEX = SPARSE - 1
