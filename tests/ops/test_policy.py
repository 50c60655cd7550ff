"""Self-test of the deployment policy (k8s_policy.violations): it must pass the real manifests
and catch each kind of violation in a broken copy of them.

    python3 -m unittest discover -s tests/ops -p 'test_*.py'      (or: pytest tests/ops)
"""
from __future__ import annotations

import copy
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import check_k8s  # noqa: E402
import k8s_policy  # noqa: E402

RENDERED = check_k8s.render()


def _sts(docs):
    return next(d for d in docs if d["kind"] == "StatefulSet")


def _container(docs):
    return _sts(docs)["spec"]["template"]["spec"]["containers"][0]


def _pod(docs):
    return _sts(docs)["spec"]["template"]["spec"]


class PolicyTest(unittest.TestCase):
    def broken(self, mutate) -> list[str]:
        docs = copy.deepcopy(RENDERED)
        result = mutate(docs)
        # a mutation may return a new document list (e.g. one without the PDB)
        return k8s_policy.violations(result if isinstance(result, list) else docs)

    def assertCaught(self, code: str, mutate):
        got = self.broken(mutate)
        self.assertTrue(any(v.startswith(f"[{code}]") for v in got),
                        f"violation [{code}] not caught; got {got}")

    def test_real_manifests_pass(self):
        self.assertEqual(k8s_policy.violations(RENDERED), [])

    def test_missing_readiness_probe(self):
        self.assertCaught("probe-readiness", lambda d: _container(d).pop("readinessProbe"))

    def test_missing_liveness_probe(self):
        self.assertCaught("probe-liveness", lambda d: _container(d).pop("livenessProbe"))

    def test_missing_startup_probe(self):
        self.assertCaught("probe-startup", lambda d: _container(d).pop("startupProbe"))

    def test_missing_requests(self):
        self.assertCaught("resources", lambda d: _container(d)["resources"].pop("requests"))

    def test_missing_limits(self):
        self.assertCaught("resources", lambda d: _container(d)["resources"].pop("limits"))

    def test_missing_memory_limit(self):
        self.assertCaught("resources", lambda d: _container(d)["resources"]["limits"].pop("memory"))

    def test_root_user(self):
        def mutate(d):
            _container(d)["securityContext"]["runAsUser"] = 0
        self.assertCaught("root", mutate)

    def test_run_as_non_root_removed(self):
        def mutate(d):
            _container(d)["securityContext"].pop("runAsNonRoot")
            _pod(d)["securityContext"].pop("runAsNonRoot")
        self.assertCaught("root", mutate)

    def test_pod_allows_root_container_inherits(self):
        def mutate(d):
            _container(d)["securityContext"].pop("runAsNonRoot")
            _pod(d)["securityContext"]["runAsNonRoot"] = False
        self.assertCaught("root", mutate)

    def test_writable_root_fs(self):
        def mutate(d):
            _container(d)["securityContext"]["readOnlyRootFilesystem"] = False
        self.assertCaught("writable-rootfs", mutate)

    def test_privilege_escalation(self):
        self.assertCaught("privilege-escalation",
                          lambda d: _container(d)["securityContext"].pop("allowPrivilegeEscalation"))

    def test_capabilities_not_dropped(self):
        def mutate(d):
            _container(d)["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}
        self.assertCaught("capabilities", mutate)

    def test_latest_tag(self):
        def mutate(d):
            _container(d)["image"] = "ghcr.io/minidb/minidb:latest"
        self.assertCaught("image-tag", mutate)

    def test_untagged_image(self):
        def mutate(d):
            _container(d)["image"] = "ghcr.io/minidb/minidb"
        self.assertCaught("image-tag", mutate)

    def test_registry_port_is_not_a_tag(self):
        def mutate(d):
            _container(d)["image"] = "registry.local:5000/minidb"
        self.assertCaught("image-tag", mutate)

    def test_digest_is_accepted(self):
        def mutate(d):
            _container(d)["image"] = "ghcr.io/minidb/minidb@sha256:" + "0" * 64
        self.assertEqual(self.broken(mutate), [])

    def test_missing_pdb(self):
        self.assertCaught("pdb", lambda d: [x for x in d if x["kind"] != "PodDisruptionBudget"])

    def test_pdb_selecting_other_pods(self):
        def mutate(d):
            pdb = next(x for x in d if x["kind"] == "PodDisruptionBudget")
            pdb["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/name": "other"}
        self.assertCaught("pdb", mutate)

    # ---- NetworkPolicy: ingress only from named sources
    def _np(self, d):
        return next(x for x in d if x["kind"] == "NetworkPolicy")

    def test_missing_network_policy(self):
        self.assertCaught("netpol", lambda d: [x for x in d if x["kind"] != "NetworkPolicy"])

    def test_network_policy_selecting_other_pods(self):
        def mutate(d):
            self._np(d)["spec"]["podSelector"]["matchLabels"] = {"app.kubernetes.io/name": "other"}
        self.assertCaught("netpol", mutate)

    def test_ingress_rule_without_from(self):
        """The policy as it was: ports only, so every pod in the cluster reached the API."""
        def mutate(d):
            for rule in self._np(d)["spec"]["ingress"]:
                rule.pop("from")
        self.assertCaught("netpol-from", mutate)

    def test_ingress_rule_with_empty_from(self):
        def mutate(d):
            self._np(d)["spec"]["ingress"][0]["from"] = []
        self.assertCaught("netpol-from", mutate)

    def test_empty_peer(self):
        def mutate(d):
            self._np(d)["spec"]["ingress"][0]["from"] = [{}]
        self.assertCaught("netpol-from", mutate)

    def test_peer_selecting_every_namespace(self):
        def mutate(d):
            self._np(d)["spec"]["ingress"][1]["from"] = [{"namespaceSelector": {}}]
        self.assertCaught("netpol-from", mutate)

    def test_ipblock_everything(self):
        def mutate(d):
            self._np(d)["spec"]["ingress"][0]["from"] = [{"ipBlock": {"cidr": "0.0.0.0/0"}}]
        self.assertCaught("netpol-from", mutate)

    def test_labelled_pods_in_any_namespace_are_a_restriction(self):
        def mutate(d):
            self._np(d)["spec"]["ingress"][0]["from"] = [
                {"namespaceSelector": {}, "podSelector": {"matchLabels": {"minidb-client": "true"}}}]
        self.assertEqual(self.broken(mutate), [])


class MiniDBManifestTest(unittest.TestCase):
    """check_k8s's MiniDB-specific checks catch what they are for."""

    def test_real_manifests_pass(self):
        self.assertEqual(check_k8s.release_label_checks(RENDERED), [])
        self.assertEqual(check_k8s.network_policy_checks(RENDERED), [])

    def test_release_label_missing(self):
        for kind in ("ServiceMonitor", "PrometheusRule"):
            docs = copy.deepcopy(RENDERED)
            next(x for x in docs if x["kind"] == kind)["metadata"]["labels"].pop("release")
            got = check_k8s.release_label_checks(docs)
            self.assertTrue(any(kind in e and "no `release` label" in e for e in got), got)

    def test_network_policy_peers(self):
        docs = copy.deepcopy(RENDERED)
        np = next(x for x in docs if x["kind"] == "NetworkPolicy")
        np["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"] = {"app": "anything"}
        self.assertNotEqual(check_k8s.network_policy_checks(docs), [])

    def test_prestop_sleep_field_is_refused(self):
        """preStop.sleep (Kubernetes 1.30+) fails the 1.27 claim."""
        docs = copy.deepcopy(RENDERED)
        _container(docs)["lifecycle"]["preStop"] = {"sleep": {"seconds": 5}}
        got = check_k8s.minidb_checks(docs)
        self.assertTrue(any("preStop.sleep" in e for e in got), got)

    def test_every_claimed_version_is_validated(self):
        versions = check_k8s.kube_versions()
        self.assertEqual(versions[0], "1.27.0")
        self.assertIn("1.30.0", versions)
        # kubernetes-validate really refuses preStop.sleep in the 1.27 schema.
        docs = copy.deepcopy(RENDERED)
        _container(docs)["lifecycle"]["preStop"] = {"sleep": {"seconds": 5}}
        self.assertNotEqual(check_k8s.kubernetes_validate(docs, ["1.27.0"]), [])
        self.assertEqual(check_k8s.kubernetes_validate(docs, ["1.30.0"]), [])


if __name__ == "__main__":
    unittest.main()
