"""The deployment files say what their READMEs promise.

Every YAML file under deploy/ and examples/ci/ must parse; then the
properties an operator relies on are checked: the DaemonSet runs on the
host network with the bpffs and state directories from the host, applies
the ConfigMap's rule set (which must itself be a valid rule set) and keeps
the exporter as its long-running process without detaching on stop; the
Ansible role calls check, apply --confirm, the health check and confirm in
that order, with nothing that confirms a failed check; the playbook stops a
rollout at a failed batch; the CI workflow validates pull requests and
gates the rollout.  No root, no kernel.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
import yaml

from xdpguard.rules.parse import load

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CI = REPO / "examples" / "ci"
ROLE = DEPLOY / "ansible" / "roles" / "xdpguard"
YAML_FILES = sorted(p for d in (DEPLOY, CI) for p in d.rglob("*") if p.suffix in (".yml", ".yaml"))


def docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def one(items: list[Any], what: str) -> Any:
    assert len(items) == 1, f"expected exactly one {what}, found {len(items)}"
    return items[0]


def test_there_are_deploy_files() -> None:
    names = {str(p.relative_to(REPO)) for p in YAML_FILES}
    assert {
        "deploy/k8s/daemonset.yaml",
        "deploy/k8s/configmap.yaml",
        "deploy/ansible/rollout.yml",
        "deploy/ansible/roles/xdpguard/tasks/main.yml",
        "deploy/ansible/roles/xdpguard/defaults/main.yml",
    } <= names
    assert any(p.parent == CI for p in YAML_FILES), "no CI workflow in examples/ci/"


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_yaml_parses(path: Path) -> None:
    assert docs(path), f"{path} holds no YAML document"


# --------------------------------------------------------------------------
# Kubernetes


def k8s_objects() -> list[dict[str, Any]]:
    return [d for p in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in docs(p)]


def daemonset() -> dict[str, Any]:
    ds: dict[str, Any] = one([o for o in k8s_objects() if o.get("kind") == "DaemonSet"], "DaemonSet")
    return ds


def container() -> dict[str, Any]:
    c: dict[str, Any] = one(daemonset()["spec"]["template"]["spec"]["containers"], "container")
    return c


def volumes() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in daemonset()["spec"]["template"]["spec"]["volumes"]}


def mount_of(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The container's mount at `path` and the volume behind it."""
    m = one([m for m in container()["volumeMounts"] if m["mountPath"] == path], f"mount at {path}")
    return m, volumes()[m["name"]]


def test_daemonset_runs_on_the_host_network() -> None:
    spec = daemonset()["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    assert spec.get("dnsPolicy") == "ClusterFirstWithHostNet"
    assert daemonset()["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == 1


def test_daemonset_pins_and_state_live_on_the_host() -> None:
    m, v = mount_of("/sys/fs/bpf")
    assert v["hostPath"]["path"] == "/sys/fs/bpf"
    # Pins made in the container must be the host's: no private propagation.
    assert m.get("mountPropagation") in ("HostToContainer", "Bidirectional")
    _, v = mount_of("/var/lib/xdpguard")
    assert v["hostPath"]["path"] == "/var/lib/xdpguard"
    env = {e["name"]: e.get("value") for e in container()["env"]}
    assert env["XDPGUARD_BPFFS"].startswith("/sys/fs/bpf/")
    assert env["XDPGUARD_STATE_DIR"] == "/var/lib/xdpguard"


def test_daemonset_may_load_and_attach_bpf() -> None:
    sc = container()["securityContext"]
    caps = set(sc.get("capabilities", {}).get("add", []))
    assert sc.get("privileged") is True or {"BPF", "NET_ADMIN", "SYS_ADMIN"} <= caps, sc


def test_daemonset_never_detaches_on_stop() -> None:
    c = container()
    assert "preStop" not in c.get("lifecycle", {}), "pins must outlive pod restarts"
    assert "detach" not in yaml.safe_dump(daemonset()["spec"]), "the DaemonSet runs no detach"


def test_rule_configmap_is_wired_and_valid(tmp_path: Path) -> None:
    m, v = mount_of("/etc/xdpguard")
    cm = one(
        [
            o
            for o in k8s_objects()
            if o.get("kind") == "ConfigMap" and o["metadata"]["name"] == v["configMap"]["name"]
        ],
        "ConfigMap the rules volume names",
    )
    assert cm["metadata"]["namespace"] == daemonset()["metadata"]["namespace"]
    assert "rules.yaml" in cm["data"]
    for key, text in cm["data"].items():
        (tmp_path / key).write_text(text)
    rs = load(tmp_path / "rules.yaml")  # set files resolve next to it, as in the pod
    assert rs.ingress.rules
    assert all(s.file is None or Path(s.file).name in cm["data"] for s in rs.sets)


def entry_script() -> str:
    c = container()
    assert c["command"][0].endswith("bash") and c["command"][-1] == "-c", c["command"]
    script: str = one(c["args"], "script argument")
    return script


def test_daemonset_applies_then_runs_the_exporter() -> None:
    script = entry_script()
    apply = re.search(r'xdpguard apply "\$rules" --iface "\$IFACE" --confirm', script)
    assert apply, script
    assert "rules=/etc/xdpguard/rules.yaml" in script
    confirm = script.index('xdpguard confirm --iface "$IFACE"')
    exporter = script.index("exec xdpguard exporter --listen 0.0.0.0:9877")
    assert apply.start() < script.index("$HEALTH_CHECK") < confirm < exporter
    assert script.rstrip().endswith("exec xdpguard exporter --listen 0.0.0.0:9877")
    # A failed check must not reach confirm: its branch ends in exit 1.
    failed_branch = script[script.index('if ! bash -c "$HEALTH_CHECK"') : confirm]
    assert "exit 1" in failed_branch and "xdpguard confirm" not in failed_branch
    assert {"IFACE", "CONFIRM_WINDOW", "HEALTH_CHECK"} <= {e["name"] for e in container()["env"]}


def test_daemonset_script_is_valid_bash(tmp_path: Path) -> None:
    f = tmp_path / "entry.sh"
    f.write_text(entry_script())
    r = subprocess.run(["bash", "-n", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------
# Ansible


def flat_tasks(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks in execution order, blocks (and rescue/always) unrolled."""
    out: list[dict[str, Any]] = []
    for t in tasks:
        if "block" in t:
            out += flat_tasks(t["block"]) + flat_tasks(t.get("rescue", [])) + flat_tasks(t.get("always", []))
        else:
            out.append(t)
    return out


def role_tasks() -> list[dict[str, Any]]:
    return flat_tasks(one(docs(ROLE / "tasks" / "main.yml"), "task list"))


def command_of(task: dict[str, Any]) -> str:
    """The command a task runs, as written (Jinja included)."""
    for key in ("ansible.builtin.command", "ansible.builtin.shell", "command", "shell"):
        if key in task:
            body = task[key]
            return str(body.get("argv") or body.get("cmd") or "") if isinstance(body, dict) else str(body)
    return ""


def index_of(tasks: list[dict[str, Any]], pred: Any, what: str) -> int:
    found = [i for i, t in enumerate(tasks) if pred(t)]
    assert len(found) == 1, f"expected one task that {what}, found {[tasks[i].get('name') for i in found]}"
    return found[0]


def test_role_checks_applies_health_checks_and_confirms_in_order() -> None:
    tasks = role_tasks()
    check = index_of(tasks, lambda t: "'check'" in command_of(t), "runs xdpguard check")
    apply = index_of(tasks, lambda t: "'apply'" in command_of(t), "runs xdpguard apply")
    health = index_of(tasks, lambda t: "xdpguard_health_check_cmd" in command_of(t), "runs the health check")
    confirm = index_of(tasks, lambda t: "'confirm'" in command_of(t), "runs xdpguard confirm")
    assert check < apply < health < confirm
    assert "'--confirm', xdpguard_confirm_window" in command_of(tasks[apply])
    # Copies come before the check, so it checks what apply will use.
    copies = [
        i
        for i, t in enumerate(tasks)
        if "ansible.builtin.copy" in t and not t["ansible.builtin.copy"].get("remote_src")
    ]
    assert copies and max(copies) < check


def test_role_never_confirms_after_a_failed_health_check() -> None:
    tasks = role_tasks()
    health = index_of(tasks, lambda t: "xdpguard_health_check_cmd" in command_of(t), "runs the health check")
    confirm = index_of(tasks, lambda t: "'confirm'" in command_of(t), "runs xdpguard confirm")
    register = tasks[health]["register"]
    stop = [i for i in range(health + 1, confirm) if "ansible.builtin.fail" in tasks[i]]
    assert len(stop) == 1, "no fail task between the health check and confirm"
    assert "_xdpguard_sick" in str(tasks[stop[0]]["when"])
    sick = one(
        [t for t in tasks[health : stop[0]] if "_xdpguard_sick" in t.get("ansible.builtin.set_fact", {})],
        "sick list",
    )
    assert register in sick["ansible.builtin.set_fact"]["_xdpguard_sick"]
    for t in tasks[health:]:
        assert not t.get("ignore_errors"), f"{t.get('name')!r} ignores errors"
    assert "when" not in tasks[confirm], "confirm must not depend on anything but reaching it"


def test_role_reads_back_the_live_digest_after_confirm() -> None:
    tasks = role_tasks()
    confirm = index_of(tasks, lambda t: "'confirm'" in command_of(t), "runs xdpguard confirm")
    asserts = [t["ansible.builtin.assert"] for t in tasks[confirm:] if "ansible.builtin.assert" in t]
    assert any("_xdpguard_digest" in str(a["that"]) and "pending_confirm" in str(a["that"]) for a in asserts)


def test_role_defaults_cover_every_variable_the_tasks_use() -> None:
    defaults = one(docs(ROLE / "defaults" / "main.yml"), "defaults mapping")
    for name in (
        "xdpguard_bin", "xdpguard_iface", "xdpguard_ifaces", "xdpguard_netns", "xdpguard_confirm_window",
        "xdpguard_health_check_cmd", "xdpguard_environment", "xdpguard_rules_src", "xdpguard_set_files",
    ):  # fmt: skip
        assert name in defaults, name
    used = set(re.findall(r"\bxdpguard_[a-z_]+", (ROLE / "tasks" / "main.yml").read_text()))
    assert used <= set(defaults), f"used but not defaulted: {sorted(used - set(defaults))}"
    tasks_text = (ROLE / "tasks" / "main.yml").read_text()
    assert 'environment: "{{ xdpguard_environment }}"' in tasks_text


def test_playbook_stops_the_rollout_at_a_failed_batch() -> None:
    play = one(docs(DEPLOY / "ansible" / "rollout.yml")[0], "play")
    assert "xdpguard_batch_size" in str(play["serial"])
    assert play["max_fail_percentage"] == 0
    assert play["any_errors_fatal"] is True
    assert [r["role"] if isinstance(r, dict) else r for r in play["roles"]] == ["xdpguard"]


def test_example_inventory_sets_role_variables() -> None:
    inv = one(docs(DEPLOY / "ansible" / "inventory.example.yml"), "inventory")
    defaults = set(one(docs(ROLE / "defaults" / "main.yml"), "defaults"))
    used: set[str] = set(inv["edge"]["vars"])
    for host in inv["edge"]["hosts"].values():
        used |= set(host or {})
    role_vars = {v for v in used if v.startswith("xdpguard_")}
    assert role_vars and role_vars <= defaults, sorted(role_vars - defaults)


def test_playbook_passes_ansible_syntax_check(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "ansible-playbook"
    found = str(exe) if exe.exists() else shutil.which("ansible-playbook")
    if found is None:
        pytest.skip(
            f"ansible-playbook not found next to {sys.executable} or on PATH (`make setup` installs it)"
        )
    ansible = DEPLOY / "ansible"
    r = subprocess.run(
        [found, "--syntax-check", "-i", str(ansible / "inventory.example.yml"), str(ansible / "rollout.yml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "ANSIBLE_HOME": str(tmp_path), "ANSIBLE_LOCAL_TEMP": str(tmp_path)},
    )
    assert r.returncode == 0, r.stdout + r.stderr


# --------------------------------------------------------------------------
# CI recipe


def workflow() -> dict[str, Any]:
    wf: dict[str, Any] = one(
        [d for p in sorted(CI.glob("*.yml")) for d in docs(p) if "jobs" in d], "workflow"
    )
    return wf


def runs(job: dict[str, Any]) -> list[str]:
    return [s.get("run", "") for s in job["steps"]]


def step_index(job: dict[str, Any], pattern: str) -> int:
    found = [i for i, r in enumerate(runs(job)) if re.search(pattern, r)]
    assert found, f"no step runs {pattern!r}"
    return found[0]


def test_workflow_validates_pull_requests() -> None:
    wf = workflow()
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads the bare key `on` as true
    assert "pull_request" in on and on["push"]["branches"] == ["main"]
    jobs = wf["jobs"]
    validate = one([j for j in jobs.values() if "rollout" not in yaml.safe_dump(j)], "validating job")
    check = step_index(validate, r"^xdpguard check rules\.yaml")
    test = step_index(validate, r"^xdpguard test rules\.yaml cases\.yaml")
    plan = step_index(validate, r"xdpguard plan rules\.yaml --iface")
    assert check < test < plan
    env = validate["steps"][plan].get("env", {})
    assert "XDPGUARD_STATE_DIR" in env, "plan must compare with a reference state"
    uploads = [
        s for s in validate["steps"][plan:] if str(s.get("uses", "")).startswith("actions/upload-artifact")
    ]
    assert uploads and "plan" in uploads[0]["with"]["path"]
    assert "secrets." not in yaml.safe_dump(validate), "pull-request jobs must not see secrets"
    assert "environment" not in validate
    # xdpguard comes from a checkout pinned by the rules repository, not from a URL.
    [install] = [r for r in runs(validate) if r.startswith("pip install")]
    assert install == "pip install ./xdpguard"
    checkout = validate["steps"][0]
    assert checkout["uses"].startswith("actions/checkout") and checkout["with"]["submodules"] is True
    assert not re.search(r"https?://", yaml.safe_dump(wf)), "no download URL in the workflow"
    assert "--junit" in runs(validate)[test]


def test_workflow_gates_the_rollout() -> None:
    jobs = workflow()["jobs"]
    name, job = one(
        [(n, j) for n, j in jobs.items() if any("ansible-playbook" in r for r in runs(j))], "rollout job"
    )
    validate = one([n for n in jobs if n != name], "other job")
    assert job["needs"] == validate or validate in job["needs"]
    assert "refs/heads/main" in job["if"] and "push" in job["if"]
    env = job["environment"]
    assert (env if isinstance(env, str) else env["name"]) == "production"
    playbook = runs(job)[step_index(job, r"ansible-playbook")]
    assert "rollout.yml" in playbook and "xdpguard_rules_src" in playbook
    assert job.get("concurrency", {}).get("cancel-in-progress") is False, (
        "a rollout must never be cancelled midway"
    )


def test_workflow_validate_steps_run(tmp_path: Path) -> None:
    """The pull-request job's commands, run as the workflow would, on an example rule set."""
    wf = workflow()
    validate = one([j for j in wf["jobs"].values() if "environment" not in j], "validating job")
    repo, temp = tmp_path / "repo", tmp_path / "runner-temp"
    shutil.copytree(REPO / "rules" / "lists", repo / "lists")
    shutil.copy(REPO / "rules" / "web-edge.yaml", repo / "rules.yaml")
    shutil.copy(REPO / "rules" / "web-edge.cases.yaml", repo / "cases.yaml")
    temp.mkdir()
    contexts = {"github.workspace": str(repo), "runner.temp": str(temp)}

    def expand(text: str) -> str:
        def one_expr(m: re.Match[str]) -> str:
            assert m.group(1) in contexts, f"no stand-in for ${{{{ {m.group(1)} }}}}"
            return contexts[m.group(1)]

        return re.sub(r"\$\{\{\s*([\w.]+)\s*\}\}", one_expr, text)

    ran = 0
    for step in validate["steps"]:
        script = step.get("run")
        if not script or script.startswith("pip install"):
            continue  # this checkout's xdpguard stands in for the pinned release
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            **{k: expand(str(v)) for k, v in {**wf.get("env", {}), **step.get("env", {})}.items()},
        }
        r = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", expand(script)],
            capture_output=True,
            text=True,
            cwd=repo,
            env=env,
            timeout=120,
        )
        assert r.returncode == 0, f"{step.get('name')}:\n{r.stdout}\n{r.stderr}"
        ran += 1
    assert ran == 3
    report = ET.parse(repo / "test-results.xml").getroot()
    assert report.tag == "testsuites" and report.attrib["failures"] == "0" and int(report.attrib["tests"]) > 5
    plan = json.loads((repo / "plan.json").read_text())
    assert plan["new_digest"] and plan["rules"]["ingress"]["added"], plan
    assert "ingress" in (repo / "plan.txt").read_text()
