"""AWX configuration as code: every object awx/configure.yml creates is valid for its awx.awx module,
surveys follow AWX's survey rules, and every survey variable is a real input of what the
playbook runs (roles' meta/argument_specs.yml, or a play-level input from docs/internals.md)."""

from __future__ import annotations

import ast
import contextlib
import functools
import re
from pathlib import Path
from typing import Any, Iterator

import ansible_collections.awx.awx.plugins.modules as awx_modules
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
AWX = REPO / "awx"
MODULES = Path(awx_modules.__path__[0])
INTERNALS = (REPO / "docs" / "internals.md").read_text()
SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
QUESTION_KEYS = {"question_name", "question_description", "variable", "type", "required", "default",
                 "choices", "min", "max", "new_question"}
SECRET_NAME = re.compile(r"password|token|api_key|secret", re.I)


class Loader(yaml.SafeLoader):
    pass


Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))  # type: ignore[arg-type]


def load(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=Loader)


# --- awx.awx argument specs, read from the modules' source --------------------------------------

def _literal(node: ast.AST, constants: dict[str, Any]) -> Any:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        return {kw.arg: _literal(kw.value, constants) for kw in node.keywords}
    if isinstance(node, ast.Dict):
        return {_literal(k, constants): _literal(v, constants) for k, v in zip(node.keys, node.values) if k}
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e, constants) for e in node.elts]
    try:
        return ast.literal_eval(node)
    except ValueError:
        # choices=list(KIND_CHOICES.keys()) and the like: the module's own literal constants
        expression = ast.Expression(body=node)  # type: ignore[arg-type]
        return eval(compile(expression, "<spec>", "eval"), {"__builtins__": {"list": list}}, constants)


def module_spec(module: str) -> dict[str, Any]:
    tree = ast.parse((MODULES / (module + ".py")).read_text())
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            with contextlib.suppress(ValueError):
                constants[node.targets[0].id] = ast.literal_eval(node.value)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "argument_spec"
                                                for t in node.targets):
            spec: dict[str, Any] = _literal(node.value, constants)
            return spec
    raise AssertionError("no argument_spec in awx.awx.%s" % module)


PY_TYPES = {"str": str, "int": int, "bool": bool, "list": list, "dict": dict, "float": (int, float)}


def module_errors(module: str, args: dict[str, Any]) -> list[str]:
    """What AnsibleModule would refuse in args (unknown, missing, wrong type, not a choice)."""
    spec = module_spec(module)
    names = {alias: name for name, option in spec.items() for alias in [name, *option.get("aliases", [])]}
    errors = ["%s: unknown option %s" % (module, key) for key in args if key not in names]
    given = {names[key] for key in args if key in names}
    errors += ["%s: missing required option %s" % (module, name)
               for name, option in spec.items() if option.get("required") and name not in given]
    for key, value in args.items():
        if key not in names or (isinstance(value, str) and "{{" in value):
            continue
        option = spec[names[key]]
        kind = option.get("type", "str")
        if not isinstance(value, PY_TYPES[kind]) or (kind != "bool" and isinstance(value, bool)):
            errors.append("%s: %s should be %s, got %r" % (module, key, kind, value))
        elif "choices" in option and value not in option["choices"]:
            errors.append("%s: %s=%r not in %s" % (module, key, value, option["choices"]))
        elif kind == "list" and option.get("elements") == "str" and not all(isinstance(v, str) for v in value):
            errors.append("%s: %s should be a list of strings" % (module, key))
    return errors


# --- what configure.yml creates ------------------------------------------------------------------

def awx_vars() -> dict[str, Any]:
    play = load(AWX / "configure.yml")[0]
    merged: dict[str, Any] = {}
    for name in play["vars_files"]:
        merged.update(load(AWX / name))
    merged.update(play.get("vars", {}))
    return merged


def resolve(value: Any, variables: dict[str, Any]) -> Any:
    """A "{{ awx_x.key }}" reference to another vars entry, as Ansible would render it."""
    found = re.fullmatch(r"\{\{\s*(awx_[a-z_]+)\.([a-z_]+)\s*\}\}", value) if isinstance(value, str) else None
    return variables[found.group(1)][found.group(2)] if found else value


def configured_objects() -> Iterator[tuple[str, dict[str, Any]]]:
    """(module, arguments) for every object the configure play creates, as its tasks build them."""
    variables = awx_vars()
    for task in load(AWX / "configure.yml")[0]["tasks"]:
        module = next(k for k in task if k.startswith("awx.awx."))
        expression = str(task[module]).strip()
        named = re.findall(r"\bawx_[a-z_]+\b", expression + str(task.get("loop", "")) + str(task.get("vars", "")))
        assert named, "task %r builds its arguments from no awx_* variable" % task["name"]
        if "loop" in task:
            items = variables[re.findall(r"\bawx_[a-z_]+\b", task["loop"])[0]]
            defaults = [variables[n] for n in re.findall(r"\b(awx_[a-z_]+)\s*\|\s*combine\(item\)", expression)]
            extra = task.get("vars", {})
            for item in items:
                args = dict(defaults[0]) if defaults else {}
                args.update(item)
                for value in extra.values():
                    if isinstance(value, dict):
                        args.update({k: resolve(v, variables) for k, v in value.items()})
                if "__awx_secret_inputs" in expression:
                    args["update_secrets"] = variables["awx_update_secrets"]
                yield module.split(".")[-1], args
        else:
            args = dict(variables[named[0]])
            if "combine({'wait': true})" in expression:
                args["wait"] = True
            yield module.split(".")[-1], args


OBJECTS = list(configured_objects())


def objects(module: str) -> list[dict[str, Any]]:
    return [args for kind, args in OBJECTS if kind == module]


@pytest.mark.parametrize("module,args", OBJECTS, ids=["%s:%s" % (m, a.get("name", a.get("identifier")))
                                                      for m, a in OBJECTS])
def test_every_object_is_valid_for_its_module(module: str, args: dict[str, Any]) -> None:
    assert module_errors(module, args) == []


def test_module_check_catches_bad_arguments() -> None:
    errors = module_errors("job_template", {"name": "x", "job_type": "deploy", "forks": "many", "colour": 1})
    assert errors == ["job_template: unknown option colour",
                      "job_template: job_type='deploy' not in ['run', 'check']",
                      "job_template: forks should be int, got 'many'"]


# --- surveys -------------------------------------------------------------------------------------

def survey_errors(survey: dict[str, Any]) -> list[str]:
    errors = []
    if set(survey) != {"name", "description", "spec"}:
        errors.append("survey keys %s, want name, description, spec" % sorted(survey))
    if not isinstance(survey.get("spec"), list) or not survey["spec"]:
        return [*errors, "survey spec must be a non-empty list of questions"]
    seen = set()
    for q in survey["spec"]:
        where = "question %s" % q.get("variable")
        errors += ["%s: unknown key %s" % (where, k) for k in set(q) - QUESTION_KEYS]
        errors += ["%s: missing %s" % (where, k) for k in ("question_name", "variable", "type", "required")
                   if k not in q]
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(q.get("variable", ""))):
            errors.append("%s: variable is not a valid name" % where)
        if q.get("variable") in seen:
            errors.append("%s: asked twice" % where)
        seen.add(q.get("variable"))
        kind = q.get("type")
        if kind not in SURVEY_TYPES:
            errors.append("%s: type %r is not an AWX survey type" % (where, kind))
            continue
        if not isinstance(q.get("required"), bool):
            errors.append("%s: required must be true or false" % where)
        choices = q.get("choices")
        if kind in ("multiplechoice", "multiselect"):
            if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
                errors.append("%s: %s needs a list of string choices" % (where, kind))
                continue
            defaults = [d for d in str(q.get("default", "")).split("\n") if d]
            if kind == "multiplechoice" and len(defaults) > 1:
                errors.append("%s: multiplechoice has one default" % where)
            errors += ["%s: default %r is not a choice" % (where, d) for d in defaults if d not in choices]
        elif choices is not None:
            errors.append("%s: choices on a %s question" % (where, kind))
        if kind in ("integer", "float"):
            number = int if kind == "integer" else (int, float)
            for key in ("min", "max"):
                if not isinstance(q.get(key), number) or isinstance(q.get(key), bool):
                    errors.append("%s: %s needs a numeric %s" % (where, kind, key))
            default = q.get("default")
            if default is not None and not (isinstance(default, number) and q["min"] <= default <= q["max"]):
                errors.append("%s: default %r outside [%s, %s]" % (where, default, q.get("min"), q.get("max")))
        if kind in ("text", "textarea", "password"):
            for key in ("min", "max"):
                if key in q and not isinstance(q[key], int):
                    errors.append("%s: %s length must be an integer" % (where, key))
            if q.get("required") and q.get("min", 0) < 1:
                errors.append("%s: a required text answer needs min >= 1" % where)
            if not q.get("required"):
                # AWX sends a blank optional answer as "" or null: an extra var that beats every default
                errors.append("%s: an optional text question overrides the playbook's default with a blank" % where)
        if "min" in q and "max" in q and q["min"] > q["max"]:
            errors.append("%s: min above max" % where)
    return errors


def templates() -> list[dict[str, Any]]:
    return objects("job_template")


def surveyed() -> list[tuple[str, dict[str, Any], list[str]]]:
    """(name, survey, playbooks it feeds) for every job template and workflow survey."""
    found = [(t["name"], t["survey_spec"], [t["playbook"]]) for t in templates() if t.get("survey_enabled")]
    by_name = {t["name"]: t for t in templates()}
    for workflow in objects("workflow_job_template"):
        nodes = [n for n in objects("workflow_job_template_node") if n["workflow_job_template"] == workflow["name"]]
        playbooks = [by_name[n["unified_job_template"]]["playbook"] for n in nodes if "unified_job_template" in n]
        if workflow.get("survey_enabled"):
            found.append((workflow["name"], workflow["survey_spec"], playbooks))
    return found


SURVEYS = surveyed()


@pytest.mark.parametrize("name,survey,playbooks", SURVEYS, ids=[s[0] for s in SURVEYS])
def test_survey_follows_awx_rules(name: str, survey: dict[str, Any], playbooks: list[str]) -> None:
    assert survey_errors(survey) == []


def test_survey_rules_catch_bad_questions() -> None:
    bad = {"name": "x", "description": "", "spec": [
        {"question_name": "a", "variable": "a", "type": "checkbox", "required": True},
        {"question_name": "b", "variable": "b", "type": "multiplechoice", "required": True, "choices": ["x"],
         "default": "y"},
        {"question_name": "c", "variable": "c", "type": "integer", "required": True, "min": 5, "max": 1,
         "default": 9},
    ]}
    assert survey_errors(bad) == [
        "question a: type 'checkbox' is not an AWX survey type",
        "question b: default 'y' is not a choice",
        "question c: default 9 outside [5, 1]",
        "question c: min above max",
    ]


# --- survey variables against the roles' argument specs ------------------------------------------

@functools.cache
def role_specs() -> dict[str, dict[str, Any]]:
    specs = {}
    for path in sorted((REPO / "roles").glob("*/meta/argument_specs.yml")):
        specs[path.parents[1].name] = (yaml.safe_load(path.read_text()) or {}).get("argument_specs", {})
    return specs


@functools.cache
def role_defaults(role: str) -> dict[str, Any]:
    path = REPO / "roles" / role / "defaults" / "main.yml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def _included(tasks: Any) -> Iterator[tuple[str, str]]:
    """(role name, entry point) of every role a task list includes, through blocks."""
    for task in tasks or []:
        if not isinstance(task, dict):
            continue
        for key in ("block", "rescue", "always"):
            yield from _included(task.get(key))
        for key in ("ansible.builtin.include_role", "ansible.builtin.import_role", "include_role", "import_role"):
            if key in task:
                yield task[key]["name"], task[key].get("tasks_from", "main")


def _role_names(name: str) -> list[str]:
    """Roles a role name resolves to; a templated name (the ladder's) is one of the rungs."""
    short = name.split(".")[-1]
    if "{{" in short:
        return [role for role in rung_names() if role in role_specs()]
    return [short] if short in role_specs() else []


@functools.cache
def playbook_roles(playbook: str) -> set[tuple[str, str]]:
    """(role, entry point) of every role the playbook runs, including roles that roles include."""
    reached: set[tuple[str, str]] = set()
    pending: list[tuple[str, str]] = []
    for play in yaml.safe_load((REPO / playbook).read_text()):
        for role in play.get("roles", []):
            pending.append((role["role"] if isinstance(role, dict) else role, "main"))
        for key in ("pre_tasks", "tasks", "post_tasks"):
            pending.extend(_included(play.get(key)))
    while pending:
        name, entry = pending.pop()
        for role in _role_names(name):
            if (role, entry) in reached:
                continue
            reached.add((role, entry))
            for tasks_file in (REPO / "roles" / role / "tasks").glob("*.yml"):
                pending.extend(_included(yaml.safe_load(tasks_file.read_text())))
    return reached


def play_level_inputs() -> list[str]:
    paragraph = INTERNALS[INTERNALS.index("Play-level inputs:"):]
    paragraph = paragraph[:paragraph.index("\n\n")]
    return [n for n in re.findall(r"`([a-z_]+)`", paragraph.split("Rung names")[0]) if "_" in n or n.isalpha()]


def rung_names() -> list[str]:
    line = INTERNALS[INTERNALS.index("Rung names, in ladder order:"):].split("\n\n")[0]
    return re.findall(r"`([a-z_]+)`", line)


@functools.cache
def inputs_of(playbook: str) -> dict[str, list[dict[str, Any]]]:
    """Variable -> the argument spec options it feeds, for every input the playbook's roles take."""
    inputs: dict[str, list[dict[str, Any]]] = {}
    reached = playbook_roles(playbook)
    specs = role_specs()
    for role, entry in reached:
        for name, option in (specs[role].get(entry, {}).get("options") or {}).items():
            inputs.setdefault(name, []).append(option)
    for variable in play_level_inputs():
        for role, entry in reached:
            options = specs[role].get(entry, {}).get("options") or {}
            for name, default in role_defaults(role).items():
                if name in options and re.search(r"\{\{[^}]*\b%s\b" % variable, str(default)):
                    option = dict(options[name])
                    if variable.endswith("rungs"):
                        option["choices"] = rung_names()
                    inputs.setdefault(variable, []).append(option)
    return inputs


COMPATIBLE = {
    "text": {"str", "raw", "path"}, "textarea": {"str", "raw"}, "password": {"str", "raw"},
    "integer": {"int", "float", "raw"}, "float": {"float", "raw"},
    "multiplechoice": {"str", "raw", "bool", "int"}, "multiselect": {"list", "raw"},
}


def bounds(option: dict[str, Any]) -> tuple[float, float] | None:
    found = re.search(r"\((-?\d+(?:\.\d+)?)\s*(?:-|\.\.)\s*(-?\d+(?:\.\d+)?)\)", str(option.get("description", "")))
    return (float(found.group(1)), float(found.group(2))) if found else None


def question_errors(question: dict[str, Any], options: list[dict[str, Any]]) -> list[str]:
    where, kind = question["variable"], question["type"]
    errors = []
    for option in options:
        spec_type = option.get("type", "str")
        if spec_type not in COMPATIBLE[kind]:
            errors.append("%s: a %s question feeds a %s input" % (where, kind, spec_type))
        choices = question.get("choices", [])
        if kind == "multiplechoice" and spec_type == "bool" and not set(choices) <= {"true", "false"}:
            errors.append("%s: boolean input offered %s" % (where, choices))
        if kind == "multiplechoice" and spec_type == "int" and not all(c.lstrip("-").isdigit() for c in choices):
            errors.append("%s: integer input offered %s" % (where, choices))
        allowed = option.get("choices")
        if allowed is not None and choices and not set(choices) <= {str(c) for c in allowed}:
            errors.append("%s: choices %s outside the spec's %s" % (where, sorted(set(choices) - set(allowed)),
                                                                     allowed))
        if allowed is not None and choices and kind == "multiselect" and set(choices) <= set(allowed):
            order = [c for c in allowed if c in choices]
            if order != choices:
                errors.append("%s: choices not in the spec's order %s" % (where, order))
        limits = bounds(option)
        if limits and kind in ("integer", "float") and not limits[0] <= question["min"] <= question["max"] <= limits[1]:
            errors.append("%s: bounds [%s, %s] outside the spec's %s" % (where, question["min"], question["max"],
                                                                         limits))
        if option.get("no_log"):
            errors.append("%s: a secret belongs in a credential, not a survey" % where)
    return errors


@pytest.mark.parametrize("name,survey,playbooks", SURVEYS, ids=[s[0] for s in SURVEYS])
def test_survey_variables_are_role_inputs(name: str, survey: dict[str, Any], playbooks: list[str]) -> None:
    errors = []
    for question in survey["spec"]:
        options = [o for playbook in playbooks for o in inputs_of(playbook).get(question["variable"], [])]
        if not options:
            errors.append("%s: not an input of %s" % (question["variable"], ", ".join(playbooks)))
        errors += question_errors(question, options)
    assert errors == []


def test_input_check_catches_mismatches() -> None:
    inputs = inputs_of("playbooks/mitigate.yml")
    assert "ladder_rungs" in inputs and "mitigate_rungs" in inputs and "incident_id" in inputs
    assert "rollback_force" not in inputs
    rungs = {"variable": "mitigate_rungs", "type": "multiselect", "choices": ["hpa_pause", "reboot"]}
    assert question_errors(rungs, inputs["mitigate_rungs"]) == [
        "mitigate_rungs: choices ['reboot'] outside the spec's %s" % rung_names()]
    force = {"variable": "mitigate_force", "type": "integer", "min": 0, "max": 1}
    assert question_errors(force, inputs["mitigate_force"]) == ["mitigate_force: a integer question feeds a bool input"]


# --- templates, workflow, credentials, inventory -------------------------------------------------

def test_job_templates_cover_every_playbook_with_a_limit_and_one_run_at_a_time() -> None:
    by_playbook: dict[str, list[dict[str, Any]]] = {}
    for template in templates():
        assert (REPO / template["playbook"]).is_file(), template["playbook"]
        assert template["allow_simultaneous"] is False, template["name"]
        # a person picks the Redis deployment with the limit; an alert names it in a survey answer
        assert template["ask_limit_on_launch"] is ("(alert)" not in template["name"]), template["name"]
        assert template["project"] == objects("project")[0]["name"]
        by_playbook.setdefault(template["playbook"], []).append(template)
    for playbook in ("triage", "mitigate", "stabilize", "rollback", "incident", "verify"):
        assert "playbooks/%s.yml" % playbook in by_playbook, playbook
    triage_types = {t["job_type"] for t in by_playbook["playbooks/triage.yml"]}
    assert triage_types == {"run", "check"}


def test_no_secret_in_template_variables() -> None:
    for kind, args in OBJECTS:
        for source in ("extra_vars", "extra_data"):
            leaked = [k for k in args.get(source, {}) if SECRET_NAME.search(k)]
            assert leaked == [], "%s %s carries %s in plain variables" % (kind, args.get("name"), leaked)
        for question in (args.get("survey_spec") or {}).get("spec", []):
            assert not SECRET_NAME.search(question["variable"]), question["variable"]


def test_credential_types_inject_the_shared_inventory_variables() -> None:
    shared = set(re.findall(r"\bstorm_[a-z_]+\b", INTERNALS))
    injected = {}
    for credential_type in objects("credential_type"):
        fields = {f["id"]: f for f in credential_type["inputs"]["fields"]}
        injectors = credential_type["injectors"]
        assert set(injectors) <= {"extra_vars", "env"}, credential_type["name"]
        for variable, template in {**injectors.get("extra_vars", {}), **injectors.get("env", {})}.items():
            field = re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", template)
            assert field and field.group(1) in fields, (variable, template)
            assert variable in shared, "%s is not a shared inventory variable" % variable
            if SECRET_NAME.search(field.group(1)):
                assert fields[field.group(1)].get("secret") is True, field.group(1)
            injected[variable] = credential_type["name"]
    assert injected["storm_redis_password"] == "Redis"
    assert injected["storm_prometheus_bearer_token"] == "Prometheus"
    types = {c["name"]: c["credential_type"] for c in objects("credential")}
    assert "OpenShift or Kubernetes API Bearer Token" in types.values()
    for template in templates():
        assert {types[c] for c in template["credentials"]} >= {"Redis", "Prometheus",
                                                               "OpenShift or Kubernetes API Bearer Token"}


def test_inventory_is_sourced_from_the_project() -> None:
    sources = {s["name"]: s for s in objects("inventory_source")}
    scm = [s for s in sources.values() if s.get("source") == "scm"]
    assert len(scm) == 1 and scm[0]["source_project"] == objects("project")[0]["name"]
    assert (REPO / scm[0]["source_path"]).is_dir()
    assert {t["inventory"] for t in templates()} == {objects("inventory")[0]["name"]}


def workflow_nodes() -> dict[str, Any]:
    return {n["identifier"]: n for n in objects("workflow_job_template_node")}


def node_playbook(node: dict[str, Any]) -> str | None:
    if "unified_job_template" not in node:
        return None
    return next(t for t in templates() if t["name"] == node["unified_job_template"])["playbook"]


def test_workflow_approves_before_mitigating_and_escalates_a_persisting_storm() -> None:
    workflow = objects("workflow_job_template")[0]
    nodes = workflow_nodes()
    names = {t["name"] for t in templates()}
    created: set[str] = set()
    for node in objects("workflow_job_template_node"):
        links = [i for key in ("success_nodes", "failure_nodes", "always_nodes") for i in node.get(key, [])]
        assert set(links) <= created, "%s links to a node created after it" % node["identifier"]
        created.add(node["identifier"])
        assert ("unified_job_template" in node) != ("approval_node" in node)
        assert node.get("unified_job_template", next(iter(names))) in names

    def playbook(identifier: str) -> str | None:
        return node_playbook(nodes[identifier])

    children = {i for n in nodes.values() for k in ("success_nodes", "failure_nodes", "always_nodes")
                for i in n.get(k, [])}
    (root,) = set(nodes) - children
    assert playbook(root) == "playbooks/triage.yml"
    (approval,) = nodes[root]["success_nodes"]
    assert "approval_node" in nodes[approval] and nodes[approval]["approval_node"]["timeout"] > 0
    (mitigate,) = nodes[approval]["success_nodes"]
    assert playbook(mitigate) == "playbooks/mitigate.yml"
    (verify,) = nodes[mitigate]["success_nodes"]
    assert playbook(verify) == "playbooks/verify.yml"
    # a storm that persists (failed verify) or a failed climb goes to a human, mitigations in place
    for step in (mitigate, verify):
        (escalate,) = nodes[step]["failure_nodes"]
        assert "approval_node" in nodes[escalate], "%s failure must wait for a human" % step
        assert nodes[escalate]["approval_node"]["timeout"] > 0
    notifications = {n["name"] for n in objects("notification_template")}
    for event in ("success", "error", "approvals"):
        assert set(workflow["notification_templates_%s" % event]) <= notifications
        assert workflow["notification_templates_%s" % event]
    # mitigate and the separate rollback job must name the same ledger
    assert "incident_id" in {q["variable"] for q in workflow["survey_spec"]["spec"] if q["required"]}


def test_workflow_never_rolls_back_by_itself() -> None:
    """Rollback scales offenders up, lowers maxclients and re-enables retries in one pass: run on a
    storm that persists, it recreates the storm. It is a separate, deliberate job, never a workflow node."""
    nodes = workflow_nodes()
    rollbacks = [i for i, n in nodes.items() if node_playbook(n) == "playbooks/rollback.yml"]
    assert rollbacks == [], "workflow nodes %s run the rollback" % rollbacks
    assert "redis-storm rollback" in {t["name"] for t in templates()}


def test_workflow_escalation_keeps_the_storm_visible() -> None:
    """After a human approves the escalation, the workflow checks recovery again: a storm still there
    fails the workflow (error notification), it never ends green on its own."""
    nodes = workflow_nodes()
    escalations = {f for n in nodes.values() for f in n.get("failure_nodes", []) if "approval_node" in nodes[f]}
    assert escalations
    for escalate in escalations:
        (recheck,) = nodes[escalate]["success_nodes"]
        assert node_playbook(nodes[recheck]) == "playbooks/verify.yml"
        assert not nodes[recheck].get("failure_nodes") and not nodes[recheck].get("always_nodes")


# --- what a launch may change --------------------------------------------------------------------

ALERT_LAUNCH_VARIABLES = {"incident_id", "storm_alert_host", "storm_alert_name"}
RULEBOOK = REPO / "extensions" / "eda" / "rulebooks" / "redis_storm.yml"


def inventory_variables() -> set[str]:
    """The inventory variables docs/internals.md lists: endpoints, credentials and guard rails."""
    section = INTERNALS[INTERNALS.index("## Inventory variables shared by every role"):]
    block = section[section.index("```"):section.index("```", section.index("```") + 3)]
    return set(re.findall(r"\bstorm_[a-z_]+\b", block))


def launch_variables(args: dict[str, Any]) -> set[str]:
    if not args.get("survey_enabled"):
        return set()
    return {q["variable"] for q in (args.get("survey_spec") or {}).get("spec", [])}


@pytest.mark.parametrize("kind,args", [(k, a) for k, a in OBJECTS if k in ("job_template", "workflow_job_template")],
                         ids=[a["name"] for k, a in OBJECTS if k in ("job_template", "workflow_job_template")])
def test_no_launch_can_redirect_the_credentials_or_loosen_a_rail(kind: str, args: dict[str, Any]) -> None:
    # without a survey to bound them, launch-time variables could set any of these
    assert not args.get("ask_variables_on_launch"), args["name"]
    # another inventory, credential or execution environment would bring its own endpoints
    for asked in ("inventory", "credential", "execution_environment", "labels", "forks", "instance_groups"):
        assert not args.get("ask_%s_on_launch" % asked), (args["name"], asked)
    assert args.get("survey_enabled") is True, args["name"]
    rails = {"storm_namespaces", "storm_protected_workloads", "storm_min_replicas", "storm_max_reduction_percent",
             "storm_kube_host", "storm_redis_host", "storm_prometheus_url", "storm_kubeconfig"}
    assert rails <= inventory_variables()
    assert launch_variables(args) & inventory_variables() == set(), args["name"]
    assert not [v for v in launch_variables(args) if re.search(r"_(host|url|port|kubeconfig|namespaces|workloads|"
                                                               r"replicas|percent)$", v) and v != "storm_alert_host"]


def test_alert_templates_take_only_the_alert_allow_list() -> None:
    alert = [t for t in templates() if "(alert)" in t["name"]]
    assert len(alert) == 2
    for template in alert:
        assert template["ask_limit_on_launch"] is False
        assert launch_variables(template) <= ALERT_LAUNCH_VARIABLES, template["name"]
        assert "storm_alert_host" in launch_variables(template)


def test_rulebook_sends_each_template_only_what_its_survey_asks() -> None:
    by_name = {t["name"]: t for t in templates()}
    sent = 0
    for ruleset in yaml.safe_load(RULEBOOK.read_text()):
        for rule in ruleset["rules"]:
            for action in rule.get("actions") or [rule["action"]]:
                job = action["run_job_template"]
                assert "limit" not in job.get("job_args", {}), job["name"]
                variables = set(job.get("job_args", {}).get("extra_vars", {}))
                assert variables <= launch_variables(by_name[job["name"]]), job["name"]
                assert "storm_alert_host" in variables
                sent += 1
    assert sent == 2
