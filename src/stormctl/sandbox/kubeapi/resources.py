"""The API resources the emulator serves, as the real API server lists them in discovery."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
READ_VERBS = ("get", "list", "watch")
WRITE_VERBS = frozenset(("create", "update", "patch", "delete", "deletecollection"))


@dataclass(frozen=True)
class Subresource:
    name: str
    kind: str
    verbs: tuple[str, ...]
    group: Optional[str] = None
    version: Optional[str] = None


SCALE = Subresource("scale", "Scale", ("get", "patch", "update"), group="autoscaling", version="v1")


@dataclass(frozen=True)
class ResourceType:
    group: str
    versions: tuple[str, ...]
    plural: str
    singular: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    subresources: tuple[Subresource, ...] = ()
    custom: bool = False
    generation: bool = False
    categories: tuple[str, ...] = ()
    field_labels: tuple[str, ...] = ()

    @property
    def qualified(self) -> str:
        """`deployments.apps`, or `pods` for the core group: the form used in Status messages."""
        return "%s.%s" % (self.plural, self.group) if self.group else self.plural

    @property
    def group_kind(self) -> str:
        return "%s.%s" % (self.kind, self.group) if self.group else self.kind

    def api_version(self, version: str) -> str:
        return "%s/%s" % (self.group, version) if self.group else version

    def subresource(self, name: str) -> Optional[Subresource]:
        for sub in self.subresources:
            if sub.name == name:
                return sub
        return None

    def has_status(self) -> bool:
        return self.subresource("status") is not None


def _status(kind: str) -> Subresource:
    return Subresource("status", kind, ("get", "patch", "update"))


_META_FIELDS = ("metadata.name", "metadata.namespace")

RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("", ("v1",), "namespaces", "namespace", "Namespace", namespaced=False, short_names=("ns",),
                 verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
                 subresources=(_status("Namespace"),), field_labels=(*_META_FIELDS, "status.phase")),
    ResourceType("", ("v1",), "pods", "pod", "Pod", short_names=("po",), categories=("all",),
                 subresources=(_status("Pod"), Subresource("log", "Pod", ("get",))),
                 field_labels=(*_META_FIELDS, "spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                               "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP",
                               "status.podIPs", "status.nominatedNodeName")),
    ResourceType("", ("v1",), "configmaps", "configmap", "ConfigMap", short_names=("cm",), field_labels=_META_FIELDS),
    ResourceType("", ("v1",), "events", "event", "Event", short_names=("ev",),
                 field_labels=(*_META_FIELDS, "involvedObject.kind", "involvedObject.namespace",
                               "involvedObject.name", "involvedObject.uid", "involvedObject.apiVersion",
                               "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
                               "reportingComponent", "source", "type")),
    ResourceType("", ("v1",), "services", "service", "Service", short_names=("svc",), categories=("all",),
                 subresources=(_status("Service"),), field_labels=(*_META_FIELDS, "spec.clusterIP", "spec.type")),
    ResourceType("apps", ("v1",), "deployments", "deployment", "Deployment", short_names=("deploy",),
                 categories=("all",), generation=True, subresources=(_status("Deployment"), SCALE),
                 field_labels=_META_FIELDS),
    ResourceType("apps", ("v1",), "statefulsets", "statefulset", "StatefulSet", short_names=("sts",),
                 categories=("all",), generation=True, subresources=(_status("StatefulSet"), SCALE),
                 field_labels=_META_FIELDS),
    ResourceType("apps", ("v1",), "replicasets", "replicaset", "ReplicaSet", short_names=("rs",),
                 categories=("all",), generation=True, subresources=(_status("ReplicaSet"), SCALE),
                 field_labels=(*_META_FIELDS, "status.replicas")),
    ResourceType("autoscaling", ("v2",), "horizontalpodautoscalers", "horizontalpodautoscaler",
                 "HorizontalPodAutoscaler", short_names=("hpa",), categories=("all",), generation=True,
                 subresources=(_status("HorizontalPodAutoscaler"),), field_labels=_META_FIELDS),
    ResourceType("networking.k8s.io", ("v1",), "ingresses", "ingress", "Ingress", short_names=("ing",),
                 generation=True, subresources=(_status("Ingress"),), field_labels=_META_FIELDS),
    ResourceType("coordination.k8s.io", ("v1",), "leases", "lease", "Lease", field_labels=_META_FIELDS),
    ResourceType("metrics.k8s.io", ("v1beta1",), "pods", "", "PodMetrics", verbs=("get", "list"),
                 field_labels=_META_FIELDS),
    ResourceType("keda.sh", ("v1alpha1",), "scaledobjects", "scaledobject", "ScaledObject", short_names=("so",),
                 custom=True, generation=True, categories=("keda", "all"),
                 subresources=(_status("ScaledObject"),), field_labels=_META_FIELDS),
    ResourceType("networking.istio.io", ("v1", "v1beta1", "v1alpha3"), "destinationrules", "destinationrule",
                 "DestinationRule", short_names=("dr",), custom=True, generation=True,
                 categories=("istio-io", "networking-istio-io"),
                 subresources=(_status("DestinationRule"),), field_labels=_META_FIELDS),
    ResourceType("traefik.io", ("v1alpha1",), "middlewares", "middleware", "Middleware", custom=True,
                 generation=True, field_labels=_META_FIELDS),
    ResourceType("authorization.k8s.io", ("v1",), "selfsubjectaccessreviews", "selfsubjectaccessreview",
                 "SelfSubjectAccessReview", namespaced=False, verbs=("create",)),
)


@dataclass
class Registry:
    """Look-ups by (group, version, plural) and by kind, and the group list in preference order."""

    resources: tuple[ResourceType, ...] = RESOURCES
    _by_path: dict[tuple[str, str, str], ResourceType] = field(default_factory=dict)
    _by_kind: dict[tuple[str, str], ResourceType] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for rt in self.resources:
            for version in rt.versions:
                self._by_path[(rt.group, version, rt.plural)] = rt
            self._by_kind.setdefault((rt.group, rt.kind), rt)

    def lookup(self, group: str, version: str, plural: str) -> Optional[ResourceType]:
        return self._by_path.get((group, version, plural))

    def by_api_version_kind(self, api_version: str, kind: str) -> Optional[ResourceType]:
        group, _, version = api_version.rpartition("/")
        rt = self._by_kind.get((group, kind))
        return rt if rt is not None and version in rt.versions else None

    def groups(self) -> list[tuple[str, tuple[str, ...]]]:
        """Named API groups (not core) with their versions, preferred first, in a stable order."""
        seen: dict[str, tuple[str, ...]] = {}
        for rt in self.resources:
            if rt.group and rt.group not in seen:
                seen[rt.group] = rt.versions
        return list(seen.items())

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for rt in self.resources if rt.group == group and version in rt.versions]

    def has_group_version(self, group: str, version: str) -> bool:
        return bool(self.in_group_version(group, version))
