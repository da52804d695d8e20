# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The flow every mutating Kubernetes module shares: read, guard, diff, ledger, write, restore.

A module describes what it wants as one ``Plan`` (or a list, applied in order): the object it
changes and a function from the live object to the values of the fields it owns::

    def build_plan(kube, params):
        ref = ObjectRef("apps/v1", "Deployment", "deployments", params["namespace"], params["name"], "scale")
        return Plan(ref, lambda live: {("spec", "replicas"): 3}, module="workload_scale",
                    workloads=["%s/%s" % (ref.namespace, ref.name)])

    def main():
        module = AnsibleModule(argument_spec=mitigation_argument_spec(name=...), supports_check_mode=True)
        run_module(module, build_plan)

``state: applied``: guards (namespace, protected workloads; ``desired`` may raise more), then
only fields whose live value differs are written, with a ``pending`` ledger entry recorded
before the write and marked ``applied`` after. Check mode writes nothing (a server-side
``dryRun=All`` request validates it unless ``validate_with_dry_run: false``). A 409 re-reads the
object and tries again after a jittered backoff (``CONFLICT_ATTEMPTS`` attempts in all).
``state: restored`` restores every open entry of the incident for the plan's object, newest first,
through the ledger.

Merge patch is used for every write; a plan whose ``ref.subresource`` is ``scale`` writes the
``/scale`` subresource and annotates the object itself separately.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Union

from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.field_paths import (
    ABSENT,
    MERGE_PATCH,
    FieldPath,
    Overlay,
    deep_merge,
    field_label,
    get_path,
    merge_diff,
    nest,
    same,
    set_path,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.guards import GUARD_ARG_SPEC, Guards
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import (
    KUBE_ARG_SPEC,
    Kube,
    KubeApiError,
    run_kube_module,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.lease import LOCK_ARG_SPEC, fence_writes
from ansible_collections.fintech.redis_storm.plugins.module_utils.ledger import (
    DEFAULT_LEDGER_NAMESPACE,
    Ledger,
    make_field,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.restore import overlay_of, restore_entry
from ansible_collections.fintech.redis_storm.plugins.module_utils.retry import CONFLICT_ATTEMPTS, back_off
from ansible_collections.fintech.redis_storm.plugins.module_utils.targets import ObjectRef, bookkeeping_patch

# Options of every mutating module (plus GUARD_ARG_SPEC and KUBE_ARG_SPEC); ``lock`` fences its writes.
MITIGATION_ARG_SPEC: Dict[str, Dict[str, Any]] = {
    "incident_id": {"type": "str", "required": True},
    "state": {"type": "str", "default": "applied", "choices": ["applied", "restored"]},
    "ledger_namespace": {"type": "str", "default": DEFAULT_LEDGER_NAMESPACE},
    "force": {"type": "bool", "default": False},
    "rung": {"type": "str"},
    "validate_with_dry_run": {"type": "bool", "default": True},
    **LOCK_ARG_SPEC,
}

Desired = Dict[FieldPath, Any]


def mitigation_argument_spec(**module_options: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The module's own options plus the shared mitigation, guard-rail and connection options."""
    spec: Dict[str, Dict[str, Any]] = {}
    for part in (MITIGATION_ARG_SPEC, GUARD_ARG_SPEC, KUBE_ARG_SPEC, module_options):
        spec.update({key: dict(value) for key, value in part.items()})
    return spec


def named_workloads(params: Dict[str, Any]) -> List[str]:
    """The workload the ``workload`` option names ('ns/name' or 'name' in the object's namespace),
    for the protected_workloads rail."""
    workload = params.get("workload")
    if not workload:
        return []
    return [workload if "/" in workload else "%s/%s" % (params["namespace"], workload)]


class Plan:
    """What one mitigation wants of one object.

    - ``ref``: the object (``ObjectRef``; ``subresource="scale"`` for replicas).
    - ``desired(live)``: the owned fields' wanted values by path, from the live object (``{}``
      when it does not exist yet); ``ABSENT`` removes a key. It may raise ``StormError`` /
      ``GuardRefusal``. It is not called for ``state: restored``.
    - ``module``: the module name recorded in the ledger.
    - ``workloads``: ``ns/name`` strings checked against ``protected_workloads``.
    - ``create(desired)``: the full body to POST when the object does not exist (the ledger
      then records action ``create`` and restore deletes it); without it a missing object is an error.
    - ``warnings``: passed to the module's warnings; a list given here may be appended to by ``desired``.
    """

    def __init__(self, ref: ObjectRef, desired: Callable[[Dict[str, Any]], Desired], module: str,
                 workloads: Sequence[str] = (), create: Optional[Callable[[Desired], Dict[str, Any]]] = None,
                 warnings: Sequence[str] = ()) -> None:
        self.ref = ref
        self.desired = desired
        self.module = module
        self.workloads = list(workloads)
        self.create = create
        # kept as given, so ``desired`` may append to the same list
        self.warnings = warnings if isinstance(warnings, list) else list(warnings)


class Outcome:
    """What happened to one plan: ``before``/``after`` are the owned fields (nested dicts)."""

    def __init__(self, ref: ObjectRef) -> None:
        self.ref = ref
        self.changed = False
        self.before: Dict[str, Any] = {}
        self.after: Dict[str, Any] = {}
        self.entry_ids: List[str] = []
        self.msg = ""
        self.live: Dict[str, Any] = {}


class Mitigator:
    """Runs plans for one incident with one Kube client; ``run`` returns the module result."""

    def __init__(self, kube: Kube, params: Dict[str, Any], check_mode: bool = False, diff: bool = False) -> None:
        self.kube = kube
        self.params = params
        self.check_mode = check_mode
        self.diff = diff
        self.force = bool(params.get("force"))
        self.validate = params.get("validate_with_dry_run", True) is not False
        self.rung = params.get("rung")
        self.guards = Guards.from_params(params)
        self.ledger = Ledger(kube, params["incident_id"], params.get("ledger_namespace"))

    def run(self, plans: Union[Plan, Sequence[Plan]]) -> Dict[str, Any]:
        """Apply or restore every plan; returns ``{changed, diff?, ledger, before, after, msg, warnings}``."""
        plan_list = [plans] if isinstance(plans, Plan) else list(plans)
        restore = self.params.get("state") == "restored"
        outcomes: List[Outcome] = []
        for plan in plan_list:
            try:
                outcomes.append(self.restore(plan) if restore else self.apply(plan))
            except StormError as exc:
                done = [o for o in outcomes if o.changed]
                if not done or exc.details.get("changed"):
                    raise
                # an earlier plan already changed its object: the failure must not hide that
                ids = [i for o in done for i in o.entry_ids]
                raise StormError("%s; before that: %s" % (exc.message, "; ".join(o.msg for o in done)),
                                 **dict(exc.details, changed=True,
                                        ledger=dict(self.ledger.ref(ids[-1] if ids else None), entry_ids=ids))
                                 ) from exc
        return self.result(outcomes, [w for p in plan_list for w in p.warnings])

    def result(self, outcomes: List[Outcome], warnings: List[str]) -> Dict[str, Any]:
        if len(outcomes) == 1:
            before, after = outcomes[0].before, outcomes[0].after
        else:
            before = {o.ref.label: o.before for o in outcomes}
            after = {o.ref.label: o.after for o in outcomes}
        ids = [i for o in outcomes for i in o.entry_ids]
        ledger = self.ledger.ref(ids[-1] if ids else None)
        ledger["entry_ids"] = ids
        result: Dict[str, Any] = {"changed": any(o.changed for o in outcomes), "before": before, "after": after,
                                  "ledger": ledger, "msg": "; ".join(o.msg for o in outcomes if o.msg)}
        if self.diff:
            label = ", ".join(o.ref.label for o in outcomes)
            result["diff"] = {"before": before, "after": after, "before_header": label, "after_header": label}
        if warnings:
            result["warnings"] = warnings
        if len(outcomes) == 1:
            result["live"] = outcomes[0].live
        return result

    # applying

    def check_guards(self, plan: Plan) -> None:
        self.guards.check_namespace(plan.ref.namespace)
        for workload in plan.workloads:
            namespace, _slash, name = workload.partition("/")
            self.guards.check_workload(namespace, name)

    def apply(self, plan: Plan) -> Outcome:
        self.check_guards(plan)
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                return self._apply_once(plan)
            except KubeApiError as exc:
                if exc.status != 409 or attempt == CONFLICT_ATTEMPTS - 1:
                    raise
            back_off(attempt)
        raise StormError("unreachable")  # pragma: no cover

    def _apply_once(self, plan: Plan) -> Outcome:
        ref, outcome = plan.ref, Outcome(plan.ref)
        live = self.kube.find(ref.path)
        if live is None and plan.create is None:
            raise StormError("not found (404): %s does not exist; check kind, namespace and name" % ref.label)
        outcome.live = live or {}
        desired = plan.desired(live or {})
        current = {path: get_path(live or {}, path) for path in desired}
        outcome.before = nest({p: v for p, (present, v) in current.items() if present})
        outcome.after = nest(desired)
        changes = [p for p, want in desired.items() if not same(*current[p], want is not ABSENT, want)]
        if not changes:
            outcome.msg = "%s already has %s" % (ref.label, ", ".join(field_label(p) for p in desired) or "no fields")
            return outcome
        outcome.changed = True
        action = "create" if live is None else "patch"
        fields = [make_field(p, current[p][0], current[p][1], desired[p], live) for p in changes]
        outcome.msg = "%s %s: %s" % ("would set" if self.check_mode else "set", ref.label,
                                     ", ".join(field_label(p) for p in changes))
        if self.check_mode:
            if self.validate:
                self._write(plan, live, desired, changes, entry_id=None, dry_run=True)
            return outcome
        entry = self.ledger.record(plan.module, ref.to_target(), fields, action=action, rung=self.rung)
        outcome.entry_ids.append(entry["id"])
        try:
            self._write(plan, live, desired, changes, entry_id=entry["id"], dry_run=False)
        except KubeApiError as exc:
            if self._settle(entry, fields, ref, exc) == "applied":
                raise StormError(
                    "%s was changed (%s, ledger entry %s), but a later step failed: %s"
                    % (ref.label, ", ".join(field_label(p) for p in changes), entry["id"], exc.message),
                    changed=True, ledger=self.ledger.ref(entry["id"])) from exc
            raise
        try:
            self.ledger.set_state(entry["id"], "applied", fields=self._stored(ref, fields))
        except StormError as exc:
            raise StormError(
                "%s was changed (%s), but ledger entry %s could not be marked applied: %s. The entry stays "
                "pending; rollback judges it by the live value and still restores it"
                % (ref.label, ", ".join(field_label(p) for p in changes), entry["id"], exc.message),
                changed=True, ledger=self.ledger.ref(entry["id"])) from exc
        return outcome

    def _write(self, plan: Plan, live: Optional[Dict[str, Any]], desired: Desired, changes: List[FieldPath],
               entry_id: Optional[str], dry_run: bool) -> None:
        ref = plan.ref
        query = {"dryRun": "All"} if dry_run else None
        incident = self.ledger.incident_id
        if live is None:
            if plan.create is None:
                raise StormError("%s does not exist, and this mitigation does not create it" % ref.label)
            body = plan.create(desired)
            if entry_id:
                deep_merge(body, bookkeeping_patch(None, incident, add=entry_id))
            self.kube.request("POST", ref.collection_path, body=body, query=query)
            return
        patch: Dict[str, Any] = {}
        for path in changes:
            set_path(patch, path, merge_diff(get_path(live, path)[1], desired[path]))
        version = (live.get("metadata") or {}).get("resourceVersion")
        if version:
            deep_merge(patch, {"metadata": {"resourceVersion": version}})
        if ref.subresource:
            self.kube.request("PATCH", ref.path, body=patch, query=query, content_type=MERGE_PATCH)
            if entry_id:
                self._mark_workload(ref, entry_id)
            return
        if entry_id:
            deep_merge(patch, bookkeeping_patch(live, incident, add=entry_id))
        self.kube.request("PATCH", ref.path, body=patch, query=query, content_type=MERGE_PATCH)

    def _mark_workload(self, ref: ObjectRef, entry_id: str) -> None:
        """Annotate the scaled workload itself where RBAC lets us: deploy/rbac.yml grants only its scale
        subresource (a write to the object could rewrite its pod template), and the ledger entry is the record."""
        try:
            parent = self.kube.find(ref.object_path)
            marks = bookkeeping_patch(parent, self.ledger.incident_id, add=entry_id)
            if marks:
                self.kube.request("PATCH", ref.object_path, body=marks, content_type=MERGE_PATCH)
        except KubeApiError as exc:
            if exc.status != 403:
                raise

    def _stored(self, ref: ObjectRef, fields: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """The fields with ``after`` as the server stored it (defaulting may add to what we sent), so
        drift is judged against the real value."""
        try:
            live = self.kube.find(ref.path)
        except StormError:
            live = None
        if live is None:
            return fields
        stored = []
        for field in fields:
            present, value = get_path(live, field["path"])
            stored.append(dict(field, present_after=present, after=value if present else None))
        return stored

    def _settle(self, entry: Dict[str, Any], fields: List[Dict[str, Any]], ref: ObjectRef,
                exc: KubeApiError) -> str:
        """After a failed write, make the entry say what the object shows (best effort); its new state."""
        try:
            live = self.kube.find(ref.path) or {}
            values = [get_path(live, f["path"]) for f in fields]
            if all(same(*v, f["present_before"], f["before"]) for v, f in zip(values, fields)):
                self.ledger.set_state(entry["id"], "failed", error=exc.message)
                return "failed"
            if all(same(*v, f["present_after"], f["after"]) for v, f in zip(values, fields)):
                self.ledger.set_state(entry["id"], "applied", error=exc.message)
                return "applied"
        except StormError:
            pass  # cannot tell: the entry stays pending and rollback judges it by the live value
        return "pending"

    # restoring

    def restore(self, plan: Plan) -> Outcome:
        outcome = Outcome(plan.ref)
        outcome.live = self.kube.find(plan.ref.path) or {}
        before: Dict[FieldPath, Any] = {}
        after: Dict[FieldPath, Any] = {}
        messages = []
        # check mode writes nothing, so older entries are judged against what the newer ones would put back
        overlay: Overlay = {}
        for entry in self.ledger.open_entries(plan.ref.to_target()):
            done = restore_entry(self.ledger, entry, force=self.force, dry_run=self.check_mode,
                                 overlay=overlay if self.check_mode else None, guards=self.guards)
            if done["outcome"] in ("drifted", "failed", "refused"):
                raise StormError(done["msg"], drift=done["drift"], entry_id=entry["id"])
            outcome.entry_ids.append(entry["id"])
            outcome.changed = outcome.changed or bool(done["changed"])
            messages.append(done["msg"])
            overlay.update(overlay_of(done))
            for field in done["fields"]:
                path = tuple(field["path"])
                before.setdefault(path, field["live"])
                after[path] = field["restored"]
        outcome.before = nest({p: v for p, v in before.items() if v is not None})
        outcome.after = nest({p: v for p, v in after.items() if v is not None})
        outcome.msg = "; ".join(messages) or "%s: no open ledger entry for incident %s" % (
            plan.ref.label, self.ledger.incident_id)
        return outcome


def run_module(module: Any, build_plan: Callable[[Kube, Dict[str, Any]], Union[Plan, Sequence[Plan]]],
               extra: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None) -> NoReturn:
    """A mutating module's whole ``main()`` after AnsibleModule: run the plan(s), exit or fail.

    ``extra(result)`` returns module-specific keys (e.g. ``replicas_before``) to add; it sees the
    result, including ``live`` (the object as read before the write, for a single plan).
    Given ``lock``, the run's hold on the incident lock is checked and renewed before any write.
    A ``StormError`` becomes ``fail_json(msg=..., **details)`` (``run_kube_module``).
    """

    def work(kube: Kube) -> Dict[str, Any]:
        fence_writes(kube, module.params, module.check_mode)
        mitigator = Mitigator(kube, module.params, check_mode=module.check_mode, diff=module._diff)
        result = mitigator.run(build_plan(kube, module.params))
        if extra is not None:
            result.update(extra(result))
        result.pop("live", None)
        return result

    run_kube_module(module, work)
