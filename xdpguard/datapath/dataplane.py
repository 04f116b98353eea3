"""The life cycle of xdpguard on one interface: attach, update, read, detach.

An update never shows a packet a mix of rule sets: the new plan goes into
the half packets are not reading, the per-CPU version flag flips, an RCU
grace period passes, then the other half is brought level so the next
update can again write only what changed.  A program is compiled (bcc)
only when none is attached or its sources changed, or when asked.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field

from xdpguard.datapath import abi
from xdpguard.datapath import bpf as B
from xdpguard.datapath import maps as M
from xdpguard.errors import KernelError
from xdpguard.rules.compile import Plan, plan_from_bytes
from xdpguard.state import Applied, Iface, bpffs_root, state_root

XDP_MODES = {"auto": 0, "native": B.XDP_FLAGS_DRV_MODE, "generic": B.XDP_FLAGS_SKB_MODE}
LINK_XDP = "link_xdp"
DIRECTIONS = ("ingress",)


@dataclass
class ApplyResult:
    changed: bool
    attached: bool = False  # a program was attached for the first time
    replaced: bool = False  # the program was recompiled and swapped
    seconds: float = 0.0
    writes: M.WriteStats = field(default_factory=M.WriteStats)
    messages: list[str] = field(default_factory=list)


def _ensure_bpffs() -> None:
    root = bpffs_root()
    if not str(root).startswith("/sys/fs/bpf"):
        return
    if not os.path.ismount("/sys/fs/bpf"):
        try:
            from ctypes import CDLL, c_char_p, get_errno

            libc = CDLL(None, use_errno=True)
            if libc.mount(c_char_p(b"bpf"), c_char_p(b"/sys/fs/bpf"), c_char_p(b"bpf"), 0, None) != 0:
                raise OSError(get_errno(), os.strerror(get_errno()))
        except OSError as e:
            raise KernelError(f"bpffs is not mounted at /sys/fs/bpf and mounting it failed: {e}") from e


def _require_root() -> None:
    if os.geteuid() != 0:
        raise KernelError("this command changes the kernel's BPF state: run it as root (CAP_BPF and CAP_NET_ADMIN)")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _kernel_error(e: B.BpfError, what: str) -> KernelError:
    return KernelError(f"{what}: {e.sentence}")


class Dataplane:
    def __init__(self, ifname: str, ifindex: int, netns: str | None = None) -> None:
        self.iface = Iface(ifname)
        self.ifindex = ifindex
        self.netns = netns

    @property
    def attached(self) -> bool:
        return os.path.exists(self.iface.pin(LINK_XDP))

    # ------------------------------------------------------------------ apply

    def apply(
        self,
        plan: Plan,
        rules_text: str | None,
        xdp_mode: str = "auto",
        replace_program: bool = False,
        summary: dict[str, object] | None = None,
    ) -> ApplyResult:
        _require_root()
        _ensure_bpffs()
        t0 = time.monotonic()
        with self.iface.lock():
            if not self.attached:
                res = self._attach(plan, xdp_mode)
            else:
                res = self._update(plan, replace_program)
            if res.changed or res.attached:
                applied = self.iface.load_applied()
                seq = (applied.seq + 1) if applied else 1
                from xdpguard.datapath.loader import source_hash as _sh  # no bcc import: pure hashing

                self.iface.save_applied(
                    Applied(
                        ifname=self.iface.ifname,
                        ifindex=self.ifindex,
                        netns=self.netns,
                        file=os.path.abspath(plan.source) if plan.source else "",
                        digest=plan.digest,
                        applied_at=time.time(),
                        seq=seq,
                        xdp_mode=xdp_mode if res.attached else (applied.xdp_mode if applied else xdp_mode),
                        source_hash=_sh(),
                        directions=list(DIRECTIONS),
                    ),
                    plan.to_bytes(),
                    rules_text,
                    summary,
                )
        res.seconds = time.monotonic() - t0
        return res

    def _attach(self, plan: Plan, xdp_mode: str) -> ApplyResult:
        from xdpguard.datapath import loader  # compiles: only on first attach

        pin_dir = str(self.iface.pin_dir)
        existed = os.path.isdir(pin_dir) and bool(os.listdir(pin_dir))
        if existed:
            # Leftovers of an attach that died before linking: nothing uses
            # them (no link), so start clean rather than trust their sizes.
            self._remove_pins()
        res = ApplyResult(changed=True, attached=True)
        created_link = False
        try:
            loaded = loader.load("ingress", pin_dir)
            try:
                problems = M.check_pinned_sizes(pin_dir, DIRECTIONS)
                if problems:
                    raise KernelError("; ".join(problems))
                for d in plan.directions()[: len(DIRECTIONS)]:
                    dm = M.open_dir_maps(pin_dir, d.name)
                    try:
                        slots, _ = M.allocate_slots([], [], [r.rule_id for r in d.rules])
                        M.zero_counters(dm, list(range(abi.MAX_SLOTS)))
                        st, bfd = M.write_half(dm, 0, plan, d, None, slots)
                        res.writes.add(st)
                        st, _ = M.write_half(dm, 1, plan, d, None, slots, bitmap_fd=bfd)
                        os.close(bfd)
                    finally:
                        dm.close()
                M.write_active(pin_dir, 0)
                prog_pin = self.iface.pin(loader.prog_pin_name("ingress"))
                _unlink(prog_pin)
                B.obj_pin(loaded.prog_fd, prog_pin)
                try:
                    link = B.link_create(loaded.prog_fd, self.ifindex, B.BPF_XDP, XDP_MODES[xdp_mode])
                except B.BpfError as e:
                    raise self._attach_error(e, xdp_mode) from e
                try:
                    B.obj_pin(link, self.iface.pin(LINK_XDP))
                    created_link = True
                finally:
                    os.close(link)
            finally:
                os.close(loaded.prog_fd)
        except BaseException:
            if not created_link:
                self._remove_pins()
            raise
        return res

    def _attach_error(self, e: B.BpfError, xdp_mode: str) -> KernelError:
        name = self.iface.ifname
        if e.errno == errno.EBUSY:
            return KernelError(
                f"attach XDP to {name}: another XDP program is attached to this interface "
                "(see `ip link show`; remove it or use `xdpguard detach`)"
            )
        if e.errno == errno.EEXIST:
            return KernelError(
                f"attach XDP to {name}: an XDP program in another mode is attached; "
                f"detach it first or pick the same --xdp-mode (asked: {xdp_mode})"
            )
        if e.errno in (errno.EOPNOTSUPP, B.ENOTSUPP) and xdp_mode == "native":
            return KernelError(f"attach XDP to {name}: the driver has no native XDP; use --xdp-mode generic or auto")
        return _kernel_error(e, f"attach XDP to {name}")

    def _update(self, plan: Plan, replace_program: bool) -> ApplyResult:
        pin_dir = str(self.iface.pin_dir)
        applied = self.iface.load_applied()
        raw = self.iface.load_plan_bytes()
        old = plan_from_bytes(raw) if raw is not None else None
        active = M.read_active(pin_dir)
        res = ApplyResult(changed=False)

        if replace_program or self._program_outdated(applied):
            self._replace_program()
            res.replaced = True

        live_ok = old is not None and all(
            self._config_hash(d.name, v) == old.hash64 for d in old.directions()[: len(DIRECTIONS)] for v in (0, 1)
        )
        if live_ok and old is not None and old.digest == plan.digest:
            res.messages.append("no changes")
            return res
        if not live_ok and old is not None:
            res.messages.append("the kernel maps did not hold the recorded rule set: rewrote them in full")

        inactive = 1 - active
        res.changed = True
        dms = {d.name: M.open_dir_maps(pin_dir, d.name) for d in plan.directions()[: len(DIRECTIONS)]}
        bitmap_fds: dict[str, int] = {}
        try:
            for d in plan.directions()[: len(DIRECTIONS)]:
                dm = dms[d.name]
                cfg_a, cfg_i = M.read_config(dm, active), M.read_config(dm, inactive)
                rules_a = M.read_rules(dm, active, cfg_a.nrules)
                rules_i = M.read_rules(dm, inactive, cfg_i.nrules)
                slots, fresh = M.allocate_slots(rules_a, rules_i, [r.rule_id for r in d.rules])
                M.zero_counters(dm, fresh)
                od = old.ingress if (old and d.name == "ingress") else (old.egress if old else None)
                st, bitmap_fds[d.name] = M.write_half(
                    dm, inactive, plan, d, od if cfg_i.plan_hash == (old.hash64 if old else -1) else None, slots
                )
                res.writes.add(st)
            M.write_active(pin_dir, inactive)
            B.rcu_barrier()
            for d in plan.directions()[: len(DIRECTIONS)]:
                dm = dms[d.name]
                cfg_a = M.read_config(dm, active)
                rules = {r.rule_id: r.slot for r in M.read_rules(dm, inactive, d.nrules)}
                od = old.ingress if (old and d.name == "ingress") else (old.egress if old else None)
                M.write_half(
                    dm,
                    active,
                    plan,
                    d,
                    od if cfg_a.plan_hash == (old.hash64 if old else -1) else None,
                    rules,
                    bitmap_fd=bitmap_fds[d.name],
                )
        finally:
            for fd in bitmap_fds.values():
                os.close(fd)
            for dm in dms.values():
                dm.close()
        return res

    def _config_hash(self, direction: str, ver: int) -> int:
        dm = M.open_dir_maps(str(self.iface.pin_dir), direction)
        try:
            return int(M.read_config(dm, ver).plan_hash)
        finally:
            dm.close()

    def _program_outdated(self, applied: Applied | None) -> bool:
        from xdpguard.datapath.loader import source_hash

        return applied is not None and applied.source_hash != source_hash()

    def _replace_program(self) -> None:
        from xdpguard.datapath import loader

        pin_dir = str(self.iface.pin_dir)
        problems = M.check_pinned_sizes(pin_dir, DIRECTIONS)
        if problems:
            raise KernelError(
                "the pinned maps do not fit the new program (" + "; ".join(problems) + "); "
                "run `xdpguard detach` and apply again"
            )
        loaded = loader.load("ingress", pin_dir)
        try:
            prog_pin = self.iface.pin(loader.prog_pin_name("ingress"))
            with B.Fd(B.obj_get(self.iface.pin(LINK_XDP))) as link, B.Fd(B.obj_get(prog_pin)) as oldp:
                try:
                    B.link_update(link, loaded.prog_fd, oldp, B.BPF_F_REPLACE)
                except B.BpfError as e:
                    raise _kernel_error(e, f"replace the XDP program on {self.iface.ifname}") from e
            _unlink(prog_pin)
            B.obj_pin(loaded.prog_fd, prog_pin)
        finally:
            os.close(loaded.prog_fd)

    # ------------------------------------------------------------------ read

    def status(self) -> dict[str, object]:
        applied = self.iface.load_applied()
        out: dict[str, object] = {"interface": self.iface.ifname, "attached": self.attached}
        if applied:
            out.update(
                file=applied.file,
                digest=applied.digest,
                version=applied.seq,
                applied_at=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(applied.applied_at)),
                xdp_mode=applied.xdp_mode,
                netns=applied.netns,
            )
        if self.attached:
            try:
                with B.Fd(B.obj_get(self.iface.pin(LINK_XDP))) as lfd:
                    li = B.link_info(lfd)
                with B.Fd(B.prog_get_fd_by_id(li.prog_id)) as pfd:
                    pi = B.prog_info(pfd)
                out["xdp"] = {
                    "link_id": li.id,
                    "prog_id": li.prog_id,
                    "ifindex": li.ifindex,
                    "tag": pi.tag,
                    "attach": "bpf_link",
                    "mode": applied.xdp_mode if applied else "?",
                }
                pin_dir = str(self.iface.pin_dir)
                active = M.read_active(pin_dir)
                out["active_half"] = active
                out["kernel_plan_hash"] = f"{self._config_hash('ingress', active):016x}"
                if applied:
                    want = int.from_bytes(bytes.fromhex(applied.digest[:16]), "little")
                    out["consistent"] = self._config_hash("ingress", active) == want
            except B.BpfError as e:
                out["error"] = e.sentence
        return out

    def stats(self) -> dict[str, object]:
        if not self.attached:
            raise KernelError(f"xdpguard is not attached to {self.iface.ifname}")
        raw = self.iface.load_plan_bytes()
        plan = plan_from_bytes(raw) if raw else None
        pin_dir = str(self.iface.pin_dir)
        active = M.read_active(pin_dir)
        out: dict[str, object] = {"interface": self.iface.ifname}
        for dname in DIRECTIONS:
            dm = M.open_dir_maps(pin_dir, dname)
            try:
                cfg = M.read_config(dm, active)
                entries = M.read_rules(dm, active, cfg.nrules)
                names = {}
                if plan is not None:
                    dp = plan.ingress if dname == "ingress" else plan.egress
                    names = {r.rule_id: (r.name, r.action.value) for r in dp.rules}
                counts = M.read_counters(dm, [e.slot for e in entries] + list(abi.RESERVED_SLOTS.values()))
                rules = []
                for i, e in enumerate(entries):
                    name, action = names.get(e.rule_id, (f"#{i}", "drop" if e.action == abi.ACT_DROP else "allow"))
                    pk, by = counts[e.slot]
                    rules.append({"name": name, "action": action, "packets": pk, "bytes": by})
                special = {}
                for k, slot in abi.RESERVED_SLOTS.items():
                    pk, by = counts[slot]
                    special[k] = {"packets": pk, "bytes": by}
                out[dname] = {
                    "rules": rules,
                    "default": {
                        "action": "drop" if cfg.flags & abi.CFG_DEFAULT_DROP else "allow",
                        **special.pop("default"),
                    },
                    **special,
                }
            finally:
                dm.close()
        return out

    # ------------------------------------------------------------------ detach

    def detach(self) -> list[str]:
        _require_root()
        with self.iface.lock():
            removed = self._remove_pins()
            self.iface.remove_state()
        return removed

    def _remove_pins(self) -> list[str]:
        """Unlink every pin (the link first, so the program stops before its maps go)."""
        pin_dir = self.iface.pin_dir
        removed = []
        link = pin_dir / LINK_XDP
        if link.exists():
            try:
                with B.Fd(B.obj_get(str(link))) as fd:
                    B.link_detach(fd)
            except B.BpfError:
                pass  # already detached (interface gone): unlinking the pin is enough
            link.unlink()
            removed.append(str(link))
        if pin_dir.is_dir():
            for p in sorted(pin_dir.iterdir()):
                p.unlink()
                removed.append(str(p))
            pin_dir.rmdir()
        _rmdir_if_empty(bpffs_root())
        return removed


def _rmdir_if_empty(path: os.PathLike[str] | str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def detach_all() -> list[str]:
    from xdpguard.state import known_ifaces

    removed: list[str] = []
    for name in known_ifaces():
        dp = Dataplane(name, 0)
        removed += dp.detach()
    _rmdir_if_empty(state_root())
    return removed
