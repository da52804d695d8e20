"""The trading world the rollback tests seed into the API emulator: a Deployment, its flag
ConfigMap and its Ingress, plus the ledger namespace."""

from __future__ import annotations

from typing import Any, Dict, List

DEPLOYMENT = "/apis/apps/v1/namespaces/trading/deployments/trading-api"
FLAGS = "/api/v1/namespaces/trading/configmaps/trading-api-flags"
INGRESS_PATH = "/apis/networking.k8s.io/v1/namespaces/trading/ingresses/trading-api"
MIDDLEWARE = "/apis/traefik.io/v1alpha1/namespaces/trading/middlewares/redis-storm-ratelimit-trading-api"
LABELS = {"app": "trading-api"}
LEDGER_NAMESPACE: Dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "redis-storm"}}
TRADING_API: Dict[str, Any] = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "trading-api", "namespace": "trading"},
    "spec": {"replicas": 6, "selector": {"matchLabels": LABELS},
             "template": {"metadata": {"labels": LABELS}, "spec": {"containers": [{"name": "a", "image": "a:1"}]}}}}
TRADING_FLAGS: Dict[str, Any] = {
    "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "trading-api-flags", "namespace": "trading"},
    "data": {"redis.retry.aggressive": "true"}}
BACKEND = {"service": {"name": "trading-api", "port": {"number": 80}}}
INGRESS: Dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
    "metadata": {"namespace": "trading", "name": "trading-api"},
    "spec": {"rules": [{"host": "trade.example.com",
                        "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": BACKEND}]}}]}}
WORLD: List[Dict[str, Any]] = [LEDGER_NAMESPACE, TRADING_API, TRADING_FLAGS, INGRESS]
