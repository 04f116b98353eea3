"""fail2ban and CrowdSec feed dynamic sets: their exact commands, verdicts on the wire.

fail2ban: the action file examples/fail2ban/action.d/xdpguard.conf is
rendered the way fail2ban renders an action (INI sections, `<tag>`
substitution from the ban's tags and the [Init] section) and the
resulting `actionban`/`actionunban` lines run through /bin/sh, as
fail2ban runs them.  CrowdSec: examples/crowdsec/xdpguard-bouncer is run
with the arguments crowdsec-custom-bouncer passes for a decision.  In both
cases `xdpguard` is found on PATH, like on a host, and the lab's frames
show whether the ban took.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.netns.clihelp import REPO, Frames, Guard, describe, guarded, lab_env, send_and_see, write_rules
from tests.netns.traffic import Lab

EXAMPLES = REPO / "examples"

RULES = """\
    version: 1
    sets:
      f2b: {dynamic: true}
      crowdsec: {dynamic: true, size: 1000000}
    ingress:
      default: allow
      rules:
        - {name: fail2ban, match: {src: "@f2b"}, action: drop}
        - {name: crowdsec, match: {src: "@crowdsec"}, action: drop}
"""


@pytest.fixture
def guard(lab: Lab, tmp_path: Path) -> Iterator[Guard]:
    with guarded(lab) as g:
        g.apply(write_rules(tmp_path, RULES))
        yield g


def host_env(lab: Lab) -> dict[str, str]:
    """The lab's environment with the venv's `xdpguard` first on PATH."""
    env = lab_env(lab)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def probe(lab: Lab) -> set[str]:
    fx = Frames(lab.a, lab.b)
    arrived, _ = send_and_see(lab, {"v4": fx.udp(), "v6": fx.udp(v6=True)})
    return arrived


def listed(lab: Lab, name: str) -> dict[str, object]:
    r = subprocess.run(
        [sys.executable, "-m", "xdpguard", "set", "list", name, "--json"],
        capture_output=True,
        text=True,
        env=lab_env(lab),
        check=True,
    )
    return {row["element"]: row["expires"] for row in json.loads(r.stdout)}


# ---------------------------------------------------------------- fail2ban


def fail2ban_command(action: str, tags: Mapping[str, str], overrides: Mapping[str, str] | None = None) -> str:
    """One command of the action file, with its tags filled in as fail2ban does:
    the call's tags first, then [Init] (a jail's `action = name[k=v]` overrides)."""
    cp = configparser.RawConfigParser(interpolation=None)
    cp.read(EXAMPLES / "fail2ban" / "action.d" / "xdpguard.conf")
    values = dict(cp.items("Init")) | dict(overrides or {}) | dict(tags)
    cmd = cp.get("Definition", action)

    def fill(m: re.Match[str]) -> str:
        return values.get(m.group(1), m.group(0))

    for _ in range(3):  # tags may refer to tags
        cmd = re.sub(r"<([a-z_]+)>", fill, cmd)
    assert "<" not in cmd, cmd
    return cmd


def run_shell(lab: Lab, cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, env=host_env(lab), cwd=REPO)


def test_fail2ban_ban_and_unban(guard: Guard, lab: Lab) -> None:
    assert probe(lab) == {"v4", "v6"}
    ban = fail2ban_command("actionban", {"ip": lab.a.ip4, "bantime": "600", "name": "sshd"})
    want = f'xdpguard set add f2b {lab.a.ip4} --timeout $( [ "600" -lt 0 ] && echo 0 || echo "600s" )'
    assert ban == want
    r = run_shell(lab, ban)
    assert r.returncode == 0, describe(r)
    assert probe(lab) == {"v6"}
    expires = listed(lab, "f2b")[lab.a.ip4]
    assert isinstance(expires, float) and 590 < expires <= 600

    # a permanent ban (bantime -1), in a set a jail chose, for IPv6
    perm = fail2ban_command("actionban", {"ip": lab.a.ip6, "bantime": "-1"}, {"setname": "f2b"})
    r = run_shell(lab, perm)
    assert r.returncode == 0, describe(r)
    assert probe(lab) == set()
    assert listed(lab, "f2b")[lab.a.ip6] is None
    assert guard.rule("fail2ban")["packets"] == 3

    for ip in (lab.a.ip4, lab.a.ip6):
        r = run_shell(lab, fail2ban_command("actionunban", {"ip": ip, "bantime": "600"}))
        assert r.returncode == 0, describe(r)
    assert probe(lab) == {"v4", "v6"}
    assert listed(lab, "f2b") == {}
    # fail2ban may unban what is already gone (after a restart): no error
    r = run_shell(lab, fail2ban_command("actionunban", {"ip": lab.a.ip4, "bantime": "600"}))
    assert r.returncode == 0, describe(r)


# ---------------------------------------------------------------- CrowdSec


def bouncer(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXAMPLES / "crowdsec" / "xdpguard-bouncer"), *args],
        capture_output=True,
        text=True,
        env=host_env(lab),
        cwd="/",
    )


def decision(value: str, duration: str, scope: str = "Ip") -> str:
    return json.dumps(
        {"duration": duration, "origin": "crowdsec", "scenario": "crowdsecurity/ssh-bf", "scope": scope,
         "type": "ban", "value": value}
    )  # fmt: skip


def test_crowdsec_custom_bouncer_adds_and_deletes_decisions(guard: Guard, lab: Lab) -> None:
    assert probe(lab) == {"v4", "v6"}
    r = bouncer(lab, "add", f"{lab.a.ip4}/32", "3600", "crowdsecurity/ssh-bf", decision(lab.a.ip4, "1h"))
    assert r.returncode == 0, describe(r)
    assert probe(lab) == {"v6"}
    # a Range decision: the prefix table
    rng = "fd00:200::/64"
    r = bouncer(lab, "add", rng, "120", "crowdsecurity/ssh-bf", decision(rng, "2m", "Range"))
    assert r.returncode == 0, describe(r)
    assert probe(lab) == set()
    elements = listed(lab, "crowdsec")
    assert set(elements) == {lab.a.ip4, "fd00:200::/64"}
    assert 3590 < float(elements[lab.a.ip4]) <= 3600 and 110 < float(elements["fd00:200::/64"]) <= 120
    assert guard.rule("crowdsec")["packets"] == 3

    r = bouncer(lab, "del", f"{lab.a.ip4}/32", "3600", "crowdsecurity/ssh-bf", decision(lab.a.ip4, "1h"))
    assert r.returncode == 0, describe(r)
    assert probe(lab) == {"v4"}
    r = bouncer(lab, "del", "fd00:200::/64", "0", "crowdsecurity/ssh-bf", decision("fd00:200::/64", "0s"))
    assert r.returncode == 0, describe(r)
    assert probe(lab) == {"v4", "v6"}

    # A malformed decision changes nothing and fails like the CLI does.
    r = bouncer(lab, "add", "not-an-ip", "60", "x", "{}")
    assert r.returncode == 2 and "not an address" in r.stderr, describe(r)
    assert listed(lab, "crowdsec") == {}
