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


if __name__ == "__main__":
    unittest.main()
