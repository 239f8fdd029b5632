"""Runs the pods of deploy/kubernetes/ferry.yaml as Kubernetes would, without Kubernetes.

Each pod `<statefulset>-<ordinal>` is a `ferry` process in its own network namespace (jepsen/'s
harness network), started with the container's command and environment exactly as written (secrets
filled with fresh random values), as the pod security context's user, with its data volume mounted at
the container's mount path, and with the headless service's pod names resolving to the other
namespaces. The probes, services, disruption budget and scrape annotations are read from the file,
so the test fails when the manifest and the binary disagree.
"""
import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import boto3
import yaml
from botocore.config import Config

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "jepsen"))
from ferry_jepsen import net  # noqa: E402
from ferry_jepsen.util import wait_until  # noqa: E402

READY_TIMEOUT_S = 90
MESSAGES = 30


def fail(message):
    raise SystemExit(f"test-kubernetes: FAIL: {message}")


def check(condition, message):
    if not condition:
        fail(message)


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


class Manifest:
    def __init__(self, path):
        with open(path) as f:
            documents = [d for d in yaml.safe_load_all(f) if d]
        by_kind = {}
        for document in documents:
            by_kind.setdefault(document["kind"], []).append(document)
        (self.statefulset,) = by_kind["StatefulSet"]
        spec = self.statefulset["spec"]
        self.name = self.statefulset["metadata"]["name"]
        self.replicas = spec["replicas"]
        self.pod = spec["template"]
        (self.container,) = self.pod["spec"]["containers"]
        self.ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        services = {s["metadata"]["name"]: s for s in by_kind["Service"]}
        self.headless = services[spec["serviceName"]]
        self.client_services = [s for n, s in services.items() if n != spec["serviceName"]]
        self.budgets = by_kind.get("PodDisruptionBudget", [])
        self.check_shape()

    def check_shape(self):
        """What a multi-node Raft cluster needs of the objects around the pods."""
        spec = self.statefulset["spec"]
        check(self.replicas == 3, "the StatefulSet runs 3 nodes")
        check(spec.get("podManagementPolicy") == "Parallel",
              "pods start in parallel (with OrderedReady the first waits forever for a majority)")
        check(self.headless["spec"].get("clusterIP") == "None", "the peer service is headless")
        check(self.headless["spec"].get("publishNotReadyAddresses") is True,
              "pod names resolve before the pods are ready")
        check(any(b["spec"].get("maxUnavailable") == 1 for b in self.budgets),
              "a disruption budget keeps a majority up")
        for service in self.client_services + [self.headless]:
            for port in service["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                known = target in self.ports or target in self.ports.values()
                check(known, f"service {service['metadata']['name']} port {target} is a container port")
        volumes = {t["metadata"]["name"] for t in spec["volumeClaimTemplates"]}
        for mount in self.container["volumeMounts"]:
            check(mount["name"] in volumes, f"volume {mount['name']} has a claim template")

    def probe_url(self, probe, ip):
        get = self.container[probe]["httpGet"]
        port = get["port"]
        return f"http://{ip}:{self.ports.get(port, port)}{get['path']}"

    def pod_names(self, ordinal):
        """The names other pods reach pod `ordinal` by: short, namespaced and fully qualified."""
        pod, service = f"{self.name}-{ordinal}", self.headless["metadata"]["name"]
        return [f"{pod}.{service}", f"{pod}.{service}.default", f"{pod}.{service}.default.svc",
                f"{pod}.{service}.default.svc.cluster.local", pod]

    def environment(self, secret_values):
        env = {}
        for var in self.container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
            else:
                ref = var["valueFrom"]["secretKeyRef"]
                key = (ref["name"], ref["key"])
                env[var["name"]] = secret_values.setdefault(key, secrets.token_hex(32))
        return env


class Pods:
    def __init__(self, manifest, binary, run_dir):
        self.manifest = manifest
        self.run_dir = run_dir
        self.procs = {}
        self.logs = {}
        context = manifest.pod["spec"].get("securityContext", {})
        self.uid = context.get("runAsUser", 0)
        self.gid = context.get("runAsGroup", self.uid)
        # The image puts `ferry` on the PATH; here a copy the pod's user may run.
        self.bin_dir = os.path.join(run_dir, "bin")
        os.makedirs(self.bin_dir)
        shutil.copy(binary, os.path.join(self.bin_dir, "ferry"))
        os.chmod(run_dir, 0o755)
        self.env = manifest.environment({})

    def ip(self, ordinal):
        return net.node_ip(ordinal + 1)

    def write_hosts(self):
        """DNS as the headless service gives it, one hosts file per namespace (`ip netns exec`
        mounts /etc/netns/<namespace>/hosts over /etc/hosts)."""
        lines = ["127.0.0.1 localhost"]
        for ordinal in range(self.manifest.replicas):
            lines.append(" ".join([self.ip(ordinal), *self.manifest.pod_names(ordinal)]))
        for ordinal in range(self.manifest.replicas):
            directory = f"/etc/netns/{net.ns_name(ordinal + 1)}"
            os.makedirs(directory, exist_ok=True)
            with open(os.path.join(directory, "hosts"), "w") as f:
                f.write("\n".join(lines) + "\n")

    def start(self, ordinal):
        volume = os.path.join(self.run_dir, f"data-{ordinal}")
        os.makedirs(volume, exist_ok=True)
        os.chown(volume, self.uid, self.gid)
        (mount,) = self.manifest.container["volumeMounts"]
        mount_path = mount["mountPath"]
        # A private mount namespace: a tmpfs over the mount path's parent, so the path can be made
        # without touching the machine, and the pod's volume bound onto it.
        setup = (f'mount -t tmpfs ferry-k8s "{os.path.dirname(mount_path)}" && mkdir -p "{mount_path}"'
                 f' && mount --bind "{volume}" "{mount_path}" && exec setpriv --reuid {self.uid}'
                 f' --regid {self.gid} --clear-groups "$@"')
        container = self.manifest.container
        command = container["command"] + container.get("args", [])
        env = dict(self.env)
        env["HOSTNAME"] = f"{self.manifest.name}-{ordinal}"
        env["PATH"] = f"{self.bin_dir}:/usr/local/bin:/usr/bin:/bin"
        log = open(os.path.join(self.run_dir, f"pod-{ordinal}.log"), "ab")
        self.logs[ordinal] = log
        self.procs[ordinal] = subprocess.Popen(
            ["ip", "netns", "exec", net.ns_name(ordinal + 1), "unshare", "--mount",
             "--propagation", "private", "sh", "-c", setup, "pod", *command],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)

    def terminate(self, ordinal):
        """As the kubelet stops a container: SIGTERM, then the grace period, then SIGKILL."""
        proc = self.procs.pop(ordinal)
        grace = self.manifest.pod["spec"].get("terminationGracePeriodSeconds", 30)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            fail(f"pod {ordinal} did not stop within its {grace} s grace period after SIGTERM")
        check(proc.returncode == 0, f"pod {ordinal} exited with {proc.returncode} after SIGTERM")

    def check_user_and_volume(self, ordinal):
        """The node runs as the pod's user and keeps its state in the pod's volume."""
        with open(f"/proc/{self.procs[ordinal].pid}/status") as f:
            uid = next(line.split()[1] for line in f if line.startswith("Uid:"))
        check(int(uid) == self.uid, f"pod {ordinal} runs as uid {self.uid}, not {uid}")
        volume = os.path.join(self.run_dir, f"data-{ordinal}")
        check(os.listdir(volume), f"pod {ordinal} keeps its data in its volume")

    def ready(self, ordinal):
        return http_status(self.manifest.probe_url("readinessProbe", self.ip(ordinal)))[0] == 200

    def wait_ready(self, ordinal):
        if not wait_until(lambda: self.ready(ordinal), READY_TIMEOUT_S, what=f"pod {ordinal} ready"):
            fail(f"pod {ordinal} not ready within {READY_TIMEOUT_S} s")

    def stop_all(self):
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        for log in self.logs.values():
            log.close()


def sqs_client(url):
    return boto3.client("sqs", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="AKIDKUBERNETES", aws_secret_access_key="unused",
                        config=Config(retries={"max_attempts": 8, "mode": "standard"},
                                      connect_timeout=5, read_timeout=30))


def receive_all(client, queue_url, expected):
    bodies = set()
    deadline = time.monotonic() + 60
    while len(bodies) < expected and time.monotonic() < deadline:
        response = client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                          WaitTimeSeconds=1)
        messages = response.get("Messages", [])
        bodies.update(m["Body"] for m in messages)
        if messages:
            client.delete_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
    return bodies


def sample_values(text, name, labels):
    """Values of the samples of metric `name` in Prometheus text that carry every one of `labels`."""
    values = []
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        if metric == name and all(label in label_text.rstrip("}").split(",") for label in labels):
            values.append(float(value))
    return values


def run(manifest, pods):
    net.setup(manifest.replicas)
    pods.write_hosts()
    for ordinal in range(manifest.replicas):
        pods.start(ordinal)
    for ordinal in range(manifest.replicas):
        pods.wait_ready(ordinal)
        status, _ = http_status(manifest.probe_url("livenessProbe", pods.ip(ordinal)))
        check(status == 200, f"pod {ordinal} live")
        pods.check_user_and_volume(ordinal)
    print(f"test-kubernetes: {manifest.replicas} pods ready")

    annotations = manifest.pod["metadata"]["annotations"]
    scrape_urls = [f"http://{pods.ip(o)}:{annotations['prometheus.io/port']}"
                   f"{annotations['prometheus.io/path']}" for o in range(manifest.replicas)]
    status, text = http_status(scrape_urls[0])
    check(status == 200 and "ferry_" in text, f"{scrape_urls[0]} serves Ferry's metrics")

    sqs_port = next(p["port"] for s in manifest.client_services for p in s["spec"]["ports"]
                    if p["name"] == "sqs")
    clients = [sqs_client(f"http://{pods.ip(o)}:{sqs_port}") for o in range(manifest.replicas)]
    queue_url = clients[0].create_queue(QueueName="kubernetes-smoke")["QueueUrl"]
    sent = {f"message-{i}" for i in range(MESSAGES)}
    for i, body in enumerate(sorted(sent)):
        clients[i % len(clients)].send_message(QueueUrl=queue_url, MessageBody=body)

    # A rolling restart, as `kubectl rollout restart` does it: one pod away at a time.
    for ordinal in reversed(range(manifest.replicas)):
        pods.terminate(ordinal)
        survivor = clients[(ordinal + 1) % manifest.replicas]
        attributes = survivor.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
        check(int(attributes["ApproximateNumberOfMessages"]) == MESSAGES,
              f"all {MESSAGES} messages counted while pod {ordinal} is away: {attributes}")
        pods.start(ordinal)
        pods.wait_ready(ordinal)
    print("test-kubernetes: rolling restart done")

    # What Prometheus would see through the scrape annotations: every pod ready, and the queue's
    # backlog, summed over the pods (each reports the partitions it leads), all there.
    def scraped():
        ready, visible = 0, 0
        for url in scrape_urls:
            status, text = http_status(url)
            if status != 200:
                return None
            ready += sum(sample_values(text, "ferry_node_ready", []))
            visible += sum(sample_values(text, "ferry_queue_messages",
                                         ['queue="kubernetes-smoke"', 'state="visible"']))
        return (ready, visible) if (ready, visible) == (manifest.replicas, MESSAGES) else None
    check(wait_until(scraped, 30, what="the scraped backlog"),
          f"every pod scraped ready and {MESSAGES} messages visible in the per-queue gauges")

    received = receive_all(clients[0], queue_url, MESSAGES)
    check(received == sent, f"every message received after the restart: missing {sorted(sent - received)}")
    print(f"test-kubernetes: PASS ({MESSAGES} messages through a rolling restart)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--manifest", required=True)
    args = parser.parse_args()
    manifest = Manifest(args.manifest)
    run_dir = tempfile.mkdtemp(prefix="ferry-kubernetes-")
    pods = None
    try:
        pods = Pods(manifest, args.binary, run_dir)
        run(manifest, pods)
    except BaseException:
        for ordinal in range(manifest.replicas):
            path = os.path.join(run_dir, f"pod-{ordinal}.log")
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    print(f"--- pod-{ordinal}.log (last lines)\n" + "".join(f.readlines()[-15:]))
        raise
    finally:
        if pods is not None:
            pods.stop_all()
        net.teardown()
        for ordinal in range(manifest.replicas):
            shutil.rmtree(f"/etc/netns/{net.ns_name(ordinal + 1)}", ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
