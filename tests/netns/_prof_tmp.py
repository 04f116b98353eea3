import time, tests.netns.test_wire_match as W, tests.netns.clihelp as H
orig = {}
for mod, name in [(H.Guard, "apply"), (H.Guard, "stats"), (W, "send_and_see"), (W.Wire, "counters")]:
    f = getattr(mod, name)
    def wrap(*a, _f=f, _n=name, **k):
        t = time.monotonic(); r = _f(*a, **k); print(f"  {_n}: {time.monotonic()-t:.2f}s"); return r
    setattr(mod, name, wrap)
