#!/usr/bin/env python3
"""check-deploy: the container and Kubernetes files under deploy/ hold together.

Reads deploy/container/Dockerfile (+ Dockerfile.dockerignore), deploy/container/compose.yaml
and the gateway configurations it mounts, deploy/container/host-gateway.toml, every YAML
document under deploy/kubernetes/, and the project version in CMakeLists.txt, and checks that:

  - every Kubernetes object has apiVersion, kind and metadata.name; there is one Namespace and
    every namespaced object (and kustomization.yaml's `namespace`) names it; no YAML mapping
    has a key twice;
  - kustomization.yaml lists every manifest file under deploy/kubernetes/, and only those;
  - the Dockerfile has a `builder` stage from debian:12, a final stage from debian:12-slim that
    copies from it, a numeric non-root USER, EXPOSE of exactly the gateway's ports, and one
    documented `docker build ... -t NAME:TAG` whose tag is the project version;
  - every container (Kubernetes and compose) runs that image, with kustomize's `images` applied;
  - each gateway (a container running pipegated) finds its configuration where it mounts it;
    that TOML parses; cert, key, client_ca, crl and export paths lie under the container's
    mounts (a Secret or ConfigMap file must be one of its keys; a FIFO the gateway creates
    needs a writable volume); log_format is json;
  - container ports = the TOML's listen ports + metrics_listen port = the Dockerfile's EXPOSE;
    probes ask GET /healthz on the metrics port, which is not on loopback; Services that select
    a gateway reach both ports and carry prometheus.io annotations for the metrics port; the
    memory limit covers [limits] max_bytes_in_flight + max_replay_bytes;
  - every volumeMount names a volume of its pod; every Secret volume is a cert-manager
    Certificate's secretName and never the CA's; Certificates name Issuers of the tree;
  - long-running containers run as the image's uid, non-root, with a read-only root file
    system, no privilege escalation and no capabilities; every container has resources;
  - a bridge client (a container running pipegate) dials a Service of the tree on a port that
    reaches a gateway's listen port, names one of that gateway's exports, expects a name that
    the gateway's Certificate carries, and presents a Certificate from the same issuer whose
    identity the export allows; its certificate files are in its mounts;
  - compose services reference files that exist, declare their named volumes, publish only the
    ports their gateway listens on, probe /healthz on its metrics port, and reach the host's
    gateway (host-gateway.toml) through host.docker.internal:host-gateway.

With --pipegated PATH --pki DIR it also runs `pipegated --check-config` on every gateway
configuration (the ConfigMap's and deploy/container/*.toml), its TLS files pointed at the PKI
that tests/make_test_pki.sh makes, so that the real parser vouches for every key and value.

Each failure is one line `FILE: what is wrong` on stderr. Exit 0 if everything holds, 1 if
anything is wrong (including a missing file), 2 for bad usage, 77 if this python lacks
python3-yaml or tomllib (one line `check-deploy  SKIP (reason)`). Reads nothing but the tree
and needs no network.
"""

import argparse
import json
import os
import posixpath
import re
import shlex
import subprocess
import sys
import tempfile

try:
    import tomllib
    import yaml
except ImportError as e:  # Debian: python3-yaml; tomllib is in Python 3.11 and later.
    print(f"check-deploy  SKIP ({e.name} is not available to {sys.executable})")
    sys.exit(77)

K8S_DIR = "deploy/kubernetes"
CONTAINER_DIR = "deploy/container"
COMPOSE = f"{CONTAINER_DIR}/compose.yaml"
DOCKERFILE = f"{CONTAINER_DIR}/Dockerfile"
DOCKERIGNORE = f"{CONTAINER_DIR}/Dockerfile.dockerignore"
HOST_GATEWAY = f"{CONTAINER_DIR}/host-gateway.toml"
CMAKELISTS = "CMakeLists.txt"
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

DEFAULT_PORT = 7445  # SPEC §2.
DEFAULT_LISTEN = ["0.0.0.0:7445"]  # deploy/pipegated.toml.example.
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
# Defaults of [limits] (deploy/pipegated.toml.example): what a gateway may hold if unset.
DEFAULT_BYTES_IN_FLIGHT = "4G"
DEFAULT_REPLAY_BYTES = "256M"
# The files of a Secret that cert-manager writes for a Certificate.
CERT_MANAGER_KEYS = frozenset({"tls.crt", "tls.key", "ca.crt"})
HOST_GATEWAY_ALIAS = "host.docker.internal"
CLUSTER_SCOPED = frozenset({
    "Namespace", "ClusterIssuer", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
    "StorageClass", "PriorityClass", "IngressClass", "CustomResourceDefinition",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "RuntimeClass"})
WORKLOAD_KINDS = frozenset({"Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"})
# pipe://HOST[:PORT]/NAME (SPEC §2), the canonical form of an address.
ADDRESS_RE = re.compile(
    r"^pipe://(\[[0-9A-Fa-f:.]+\]|[^/:\[\]]+)(?::(\d+))?/([A-Za-z0-9._-]{1,128})$")


class Problems:
    """The failures found so far, in the order found, each once."""

    def __init__(self):
        self.items = []
        self._seen = set()

    def add(self, path, message):
        if (path, message) not in self._seen:
            self._seen.add((path, message))
            self.items.append((path, message))


# ---- Reading files -----------------------------------------------------------------------


class StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one,
    which hides a second `ports:` or `env:` that Kubernetes would also drop)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        if isinstance(key, (str, int, float, bool)):
            seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def yaml_error_text(err):
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    what = getattr(err, "problem", None) or str(err)
    return f"YAML does not parse: {where}{what}"


def load_yaml_documents(root, rel, problems):
    """Every non-empty document of a YAML file, or [] (and a problem) if it does not parse."""
    try:
        with open(os.path.join(root, rel), encoding="utf-8") as f:
            return [d for d in yaml.load_all(f, Loader=StrictLoader) if d is not None]
    except yaml.YAMLError as err:
        problems.add(rel, yaml_error_text(err))
    except (OSError, UnicodeDecodeError) as err:
        problems.add(rel, f"cannot be read: {err}")
    return []


def parse_toml(text, rel, what, problems):
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        problems.add(rel, f"{what} does not parse as TOML: {err}")
        return None


def read_text(root, rel):
    try:
        with open(os.path.join(root, rel), encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def dig(value, *keys, default=None):
    """value[k1][k2]... where each step is a mapping (or a list and an int), else default."""
    for key in keys:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and isinstance(key, int) and -len(value) <= key < len(value):
            value = value[key]
        else:
            return default
    return value


def as_list(value):
    return value if isinstance(value, list) else []


def as_dict(value):
    return value if isinstance(value, dict) else {}


def split_image(image):
    """'repo/name:tag' -> ('repo/name', 'tag'); a digest stays in the tag part ('@sha256:..')."""
    if "@" in image:
        name, _, digest = image.partition("@")
        repo, tag = split_image(name)
        return repo, (tag + "@" if tag else "@") + digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1:]
    return image, ""


def listen_port(value):
    """'HOST:PORT' or '[V6]:PORT' -> (host, port), or None."""
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):(\d{1,5})", value)
    if not m or not 0 < int(m.group(2)) < 65536:
        return None
    return m.group(1), int(m.group(2))


def is_loopback(host):
    return host in ("localhost", "[::1]") or host.startswith("127.")


def pipegate_size(value):
    """A [limits] size: an integer (bytes) or '64K' / '64M' / '4G' (binary)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = re.fullmatch(r"(\d+)([KMG]?)", str(value))
    if not m:
        return None
    return int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]


def k8s_quantity(value):
    """A Kubernetes memory quantity ('256Mi', '1G', '1048576') in bytes, or None."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?", str(value))
    if not m:
        return None
    factor = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3,
              "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[m.group(2)]
    return int(float(m.group(1)) * factor)


def mib(n):
    return f"{n / (1 << 20):g} MiB"


def argv_of(command, args, entrypoint, cmd):
    """The process a container runs: Kubernetes' command/args and compose's entrypoint/command
    over the image's ENTRYPOINT/CMD (a given command or entrypoint drops the image's CMD)."""
    def words(v):
        if v is None:
            return None
        if isinstance(v, str):
            try:
                return shlex.split(v)
            except ValueError:
                return v.split()
        return [str(x) for x in v] if isinstance(v, list) else []
    command, args = words(command), words(args)
    if command is not None:
        return command + (args or [])
    return list(entrypoint) + (args if args is not None else list(cmd))


def option_value(argv, *names):
    """The value of --name VALUE or --name=VALUE in argv, or None."""
    for i, word in enumerate(argv):
        for name in names:
            if word == name and i + 1 < len(argv):
                return argv[i + 1]
            if word.startswith(name + "="):
                return word[len(name) + 1:]
    return None


def program(argv):
    return posixpath.basename(argv[0]) if argv else ""


# ---- The Dockerfile ------------------------------------------------------------------------


class Image:
    """What the Dockerfile says about the image."""

    def __init__(self):
        self.name = None  # 'pipegate:0.1.0', from the documented docker build command.
        self.uid = None
        self.gid = None
        self.exposed = set()
        self.entrypoint = []
        self.cmd = []


def parse_dockerfile(text):
    """(instructions, comments): instructions as (line, KEYWORD, arguments) with continuation
    lines joined; comments as (line, text) outside instructions."""
    instructions, comments = [], []
    pending, start = None, 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if pending is None:
            if not line:
                continue
            if line.startswith("#"):
                comments.append((number, line))
                continue
            pending, start = "", number
        elif not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        keyword, _, rest = pending.partition(" ")
        instructions.append((start, keyword.upper(), rest.strip()))
        pending = None
    return instructions, comments


def base_is(base, *allowed):
    """Whether a FROM image is one of allowed, pinned by digest or not."""
    return base.split("@")[0] in allowed


def exec_form(text):
    try:
        value = json.loads(text)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    except ValueError:
        pass
    return ["/bin/sh", "-c", text]


def check_dockerfile(root, version, problems):
    image = Image()
    text = read_text(root, DOCKERFILE)
    if text is None:
        problems.add(DOCKERFILE, "is missing")
        return image
    instructions, comments = parse_dockerfile(text)

    names = sorted({m.group(1) for _, c in comments
                    for m in [re.search(r"docker build\b.*\s-t\s+(\S+)", c)] if m})
    if len(names) != 1:
        problems.add(DOCKERFILE, "must document exactly one image name, as a comment "
                     f"`docker build -f {DOCKERFILE} -t NAME:TAG .` (found {names or 'none'})")
    else:
        image.name = names[0]
        tag = split_image(image.name)[1]
        if not tag:
            problems.add(DOCKERFILE, f"the documented image {image.name} has no tag")
        elif version and tag != version:
            problems.add(DOCKERFILE, f"the documented image {image.name} is not tagged with the "
                         f"project version {version} ({CMAKELISTS})")

    stages = []  # (name, base, line of FROM, [instructions])
    for line, keyword, rest in instructions:
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            base = words[0] if words else ""
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append((name, base, line, []))
        elif stages:
            stages[-1][3].append((line, keyword, rest))
    if len(stages) < 2:
        problems.add(DOCKERFILE,
                     f"must have a builder stage and a runtime stage, has {len(stages)}")
        return image
    builder = [s for s in stages[:-1] if s[0] == "builder"]
    if not builder:
        problems.add(DOCKERFILE, "has no stage named builder (FROM debian:12 AS builder)")
    elif not base_is(builder[0][1], "debian:12", "debian:bookworm"):
        problems.add(DOCKERFILE, f"line {builder[0][2]}: the builder stage is FROM "
                     f"{builder[0][1]}, not debian:12")
    _, final_base, final_line, final = stages[-1]
    if not base_is(final_base, "debian:12-slim", "debian:bookworm-slim"):
        problems.add(DOCKERFILE, f"line {final_line}: the final stage is FROM {final_base}, "
                     "not debian:12-slim")
    if not any(k == "COPY" and re.search(r"--from=builder\b", r) for _, k, r in final):
        problems.add(DOCKERFILE, "the final stage copies nothing from the builder stage")
    if builder:
        runs = " ".join(r for _, k, r in builder[0][3] if k == "RUN")
        for word in ("cmake --preset release", "cmake --install"):
            if word not in runs:
                problems.add(DOCKERFILE, f"the builder stage does not run `{word}`")

    users = [(line, r) for line, k, r in final if k == "USER"]
    if not users:
        problems.add(DOCKERFILE, "the final stage has no USER: the gateway would run as root")
    else:
        line, user = users[-1]
        uid, _, gid = user.partition(":")
        if uid in ("root", "0") or gid in ("root", "0"):
            problems.add(DOCKERFILE, f"line {line}: USER {user} is root")
        elif not uid.isdigit() or (gid and not gid.isdigit()):
            problems.add(DOCKERFILE, f"line {line}: USER {user} must be numeric (uid:gid), so "
                         "that Kubernetes can check runAsNonRoot")
        else:
            image.uid, image.gid = int(uid), int(gid) if gid else None
    for line, keyword, rest in final:
        if keyword == "EXPOSE":
            for word in rest.split():
                port = word.split("/")[0]
                if port.isdigit():
                    image.exposed.add(int(port))
                else:
                    problems.add(DOCKERFILE, f"line {line}: EXPOSE {word} is not a port")
        elif keyword == "ENTRYPOINT":
            image.entrypoint = exec_form(rest)
        elif keyword == "CMD":
            image.cmd = exec_form(rest)
        elif keyword == "LABEL" and image.name:
            m = re.search(r'org\.opencontainers\.image\.version="?([^"\s]+)', rest)
            if m and m.group(1) != split_image(image.name)[1]:
                problems.add(DOCKERFILE, f"line {line}: org.opencontainers.image.version "
                             f"{m.group(1)} is not the tag of {image.name}")
    if program(image.entrypoint) != "pipegated":
        problems.add(DOCKERFILE, f"the ENTRYPOINT is {image.entrypoint}, not pipegated")

    ignore = read_text(root, DOCKERIGNORE)
    if ignore is None:
        problems.add(DOCKERIGNORE, "is missing (BuildKit reads it for the Dockerfile beside it)")
    else:
        patterns = {l.strip() for l in ignore.splitlines() if l.strip() and not l.startswith("#")}
        for want in (".git", "build-*"):
            if want not in patterns:
                problems.add(DOCKERIGNORE, f"does not exclude {want}")
    return image


# ---- Mounts and gateway configurations (shared by Kubernetes and compose) ------------------


class Mount:
    """A directory (or one file) that a container sees, and what it holds when that is known.

    files: the names a Secret or ConfigMap volume (or one bound file) provides, or None when
    anything may be there (a host directory, an emptyDir, a volume); keys: for a ConfigMap or
    Secret, the key behind each of those names (items may rename them)."""

    def __init__(self, path, source, kind, files=None, writable=True, ref=None, keys=None):
        self.path = posixpath.normpath(path)
        self.source = source  # How the message names it: "volume tls (Secret x)".
        self.kind = kind  # secret, configMap, file, dir.
        self.files = files
        self.writable = writable
        self.ref = ref  # The Secret's or ConfigMap's name, or the bound file's path.
        self.keys = keys if keys is not None else {f: f for f in files or ()}


def find_mount(mounts, path):
    """The mount with the longest path that holds path, and path relative to it."""
    path = posixpath.normpath(path)
    best = None
    for m in mounts:
        if path == m.path or path.startswith(m.path.rstrip("/") + "/"):
            if best is None or len(m.path) > len(best.path):
                best = m
    if best is None:
        return None, None
    return best, posixpath.relpath(path, best.path) if path != best.path else ""


def check_file_in_mounts(problems, rel, where, what, path, mounts, create=False):
    """A file a process opens (or a FIFO it creates) must be inside one of its mounts."""
    if not isinstance(path, str) or not path.startswith("/"):
        problems.add(rel, f"{where}: {what} {path!r} is not an absolute path")
        return None
    mount, name = find_mount(mounts, path)
    if mount is None:
        listed = ", ".join(sorted(m.path for m in mounts)) or "none"
        problems.add(rel, f"{where}: {what} {path} is not under any mount of the container "
                     f"(mounts: {listed})")
        return None
    if create:
        if mount.kind in ("secret", "configMap", "file") or not mount.writable:
            problems.add(rel, f"{where}: {what} {path} is made by the gateway (create = true), "
                         f"but {mount.source} at {mount.path} is read-only")
    elif mount.files is not None and name not in mount.files:
        have = ", ".join(sorted(mount.files)) or "nothing"
        problems.add(rel, f"{where}: {what} {path}: {mount.source} at {mount.path} has no "
                     f"file {name or '(the mount itself)'} (it has {have})")
    return mount


class GatewayConfig:
    """A gateway's pipegated.toml: where it comes from (rel, what), its ports and exports."""

    def __init__(self, rel, what, data):
        self.rel = rel
        self.what = what
        self.data = data
        self.listen = []  # [(host, port)]
        self.metrics = None  # (host, port) or None
        self.exports = {}  # name -> export table

    def ports(self):
        return {p for _, p in self.listen} | ({self.metrics[1]} if self.metrics else set())


def read_gateway_config(problems, rel, what, data):
    """The ports and exports of a parsed pipegated.toml (problems for values it cannot use)."""
    config = GatewayConfig(rel, what, data)
    gateway = data.get("gateway")
    if not isinstance(gateway, dict):
        problems.add(rel, f"{what} has no [gateway] table")
        gateway = {}
    listen = gateway.get("listen", DEFAULT_LISTEN)
    for value in listen if isinstance(listen, list) else [listen]:
        parsed = listen_port(value)
        if parsed is None:
            problems.add(rel, f"{what}: listen {value!r} is not HOST:PORT")
        else:
            config.listen.append(parsed)
    if "metrics_listen" in gateway:
        config.metrics = listen_port(gateway["metrics_listen"])
        if config.metrics is None:
            problems.add(rel, f"{what}: metrics_listen {gateway['metrics_listen']!r} is not "
                         "HOST:PORT")
    for key in ("cert", "key", "client_ca"):
        if not isinstance(gateway.get(key), str):
            problems.add(rel, f"{what}: [gateway] has no {key}")
    for export in as_list(data.get("export")):
        if isinstance(export, dict) and isinstance(export.get("name"), str):
            config.exports[export["name"]] = export
    if not config.exports:
        problems.add(rel, f"{what} exports nothing ([[export]])")
    return config


def check_container_gateway(problems, config, where, mounts):
    """What any gateway in a container needs: its files in its mounts, JSON logs."""
    gateway = as_dict(config.data.get("gateway"))
    for key in ("cert", "key", "client_ca", "crl"):
        if key in gateway:
            check_file_in_mounts(problems, config.rel, where, f"{config.what}: {key}",
                                 gateway[key], mounts)
    for name, export in sorted(config.exports.items()):
        check_file_in_mounts(problems, config.rel, where, f"{config.what}: export {name}: path",
                             export.get("path"), mounts, create=export.get("create") is True)
    if gateway.get("log_format") != "json":
        problems.add(config.rel, f"{config.what}: log_format is "
                     f"{gateway.get('log_format', 'text (the default)')!r}, but in a container it "
                     "must be \"json\", one object per line for the log collector")


def identities_admitted(allow, ids):
    """Whether an export's allow list admits a client with identities ids: {'cn','dns','uri'}."""
    for entry in allow:
        if not isinstance(entry, str):
            continue
        if entry == "*":
            return True
        kind, value = None, entry
        for prefix in ("cn", "dns", "uri"):
            if entry.startswith(prefix + ":"):
                kind, value = prefix, entry[len(prefix) + 1:]
        if kind is None:
            kind = "uri" if value.endswith("/*") or "://" in value else "cn-or-dns"
        if kind == "uri" and value.endswith("/*"):
            if any(u.startswith(value[:-1]) for u in ids["uri"]):
                return True
        elif kind == "cn-or-dns":
            if value in ids["cn"] or value in ids["dns"]:
                return True
        elif value in ids[kind]:
            return True
    return False


# ---- Kubernetes ----------------------------------------------------------------------------


class Obj:
    """One Kubernetes object and the file it is in."""

    def __init__(self, rel, doc):
        self.rel = rel
        self.doc = doc
        self.kind = doc.get("kind")
        self.name = dig(doc, "metadata", "name")
        self.namespace = dig(doc, "metadata", "namespace")

    def label(self):
        return f"{self.kind} {self.name}"


def pod_template(obj):
    """(pod metadata, pod spec) of a workload, or (None, None)."""
    if obj.kind == "Pod":
        return as_dict(obj.doc.get("metadata")), as_dict(obj.doc.get("spec"))
    if obj.kind in WORKLOAD_KINDS:
        template = dig(obj.doc, "spec", "template", default={})
    elif obj.kind == "CronJob":
        template = dig(obj.doc, "spec", "jobTemplate", "spec", "template", default={})
    else:
        return None, None
    return as_dict(as_dict(template).get("metadata")), as_dict(as_dict(template).get("spec"))


class Pod:
    """A pod template of a workload, with its containers and what each one runs."""

    def __init__(self, obj, meta, spec):
        self.obj = obj
        self.labels = as_dict(meta.get("labels"))
        self.spec = spec
        self.volumes = {}
        for v in as_list(spec.get("volumes")):
            if isinstance(v, dict) and isinstance(v.get("name"), str):
                self.volumes[v["name"]] = v
        # (role, container): role is "container", "sidecar" (restartPolicy: Always) or "init".
        self.containers = []
        for c in as_list(spec.get("initContainers")):
            if isinstance(c, dict):
                native_sidecar = c.get("restartPolicy") == "Always"
                self.containers.append(("sidecar" if native_sidecar else "init", c))
        for c in as_list(spec.get("containers")):
            if isinstance(c, dict):
                self.containers.append(("container", c))
        self.gateways = []  # (container, GatewayConfig)


class Tree:
    """Everything read from deploy/kubernetes/."""

    def __init__(self):
        self.objects = []
        self.files = []
        self.kustomization = None  # (rel, doc)
        self.pods = []

    def by_kind(self, kind):
        return [o for o in self.objects if o.kind == kind]

    def find(self, kind, name):
        for o in self.objects:
            if o.kind == kind and o.name == name:
                return o
        return None

    def certificate_for_secret(self, secret):
        for o in self.by_kind("Certificate"):
            if dig(o.doc, "spec", "secretName") == secret:
                return o
        return None


def read_kubernetes(root, problems):
    tree = Tree()
    base = os.path.join(root, K8S_DIR)
    if not os.path.isdir(base):
        problems.add(K8S_DIR, "is missing")
        return tree
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for f in sorted(filenames):
            if f.endswith((".yaml", ".yml")) or f == "Kustomization":
                tree.files.append(posixpath.join(
                    K8S_DIR, os.path.relpath(os.path.join(dirpath, f), base).replace(os.sep, "/")))
    for rel in tree.files:
        docs = load_yaml_documents(root, rel, problems)
        if posixpath.basename(rel) in KUSTOMIZATION_NAMES and posixpath.dirname(rel) == K8S_DIR:
            if len(docs) != 1 or not isinstance(docs[0], dict):
                problems.add(rel, "must hold one Kustomization mapping")
            else:
                tree.kustomization = (rel, docs[0])
            continue
        for i, doc in enumerate(docs, 1):
            if not isinstance(doc, dict):
                problems.add(rel, f"document {i} is not a mapping")
                continue
            missing = [k for k in ("apiVersion", "kind") if not isinstance(doc.get(k), str)]
            if not isinstance(dig(doc, "metadata", "name"), str):
                missing.append("metadata.name")
            if missing:
                problems.add(rel, f"document {i} ({doc.get('kind', 'no kind')}) has no "
                             + ", ".join(missing))
                if "kind" in missing or "metadata.name" in missing:
                    continue
            tree.objects.append(Obj(rel, doc))
    if tree.kustomization is None:
        problems.add(f"{K8S_DIR}/kustomization.yaml", "is missing")
    return tree


def check_kustomization(tree, problems):
    if tree.kustomization is None:
        return
    rel, doc = tree.kustomization
    if doc.get("kind") != "Kustomization" or not str(doc.get("apiVersion", "")).startswith(
            "kustomize.config.k8s.io/"):
        problems.add(rel, "is not a kustomize.config.k8s.io Kustomization")
    manifests = [f for f in tree.files if f != rel]
    listed = []
    for entry in as_list(doc.get("resources")):
        path = posixpath.normpath(posixpath.join(K8S_DIR, str(entry)))
        if path in listed:
            problems.add(rel, f"lists {entry} twice")
        listed.append(path)
        if path not in manifests:
            problems.add(rel, f"lists {entry}, which is no manifest file in {K8S_DIR}")
    for f in manifests:
        if f not in listed:
            problems.add(rel, f"does not list {posixpath.relpath(f, K8S_DIR)} in resources")


def check_namespaces(tree, problems):
    namespaces = tree.by_kind("Namespace")
    if len(namespaces) != 1:
        problems.add(K8S_DIR, f"must declare exactly one Namespace, declares {len(namespaces)}")
    ns = namespaces[0].name if namespaces else None
    if tree.kustomization and "namespace" in tree.kustomization[1]:
        if ns and tree.kustomization[1]["namespace"] != ns:
            problems.add(tree.kustomization[0], f"namespace {tree.kustomization[1]['namespace']} "
                         f"is not the Namespace {ns} ({namespaces[0].rel})")
    for o in tree.objects:
        if o.kind in CLUSTER_SCOPED:
            if o.namespace is not None:
                problems.add(o.rel, f"{o.label()} is cluster-scoped but has metadata.namespace")
        elif o.namespace is None:
            problems.add(o.rel, f"{o.label()} has no metadata.namespace (want {ns})")
        elif ns and o.namespace != ns:
            problems.add(o.rel, f"{o.label()} is in namespace {o.namespace}, not {ns}")


def effective_image(tree, image):
    """The image after kustomization.yaml's `images` (name -> newName, newTag, digest)."""
    if not tree.kustomization or not isinstance(image, str):
        return image
    repo, tag = split_image(image)
    for entry in as_list(tree.kustomization[1].get("images")):
        if isinstance(entry, dict) and entry.get("name") == repo:
            repo = str(entry.get("newName", repo))
            if "digest" in entry:
                return f"{repo}@{entry['digest']}"
            tag = str(entry.get("newTag", tag))
    return f"{repo}:{tag}" if tag else repo


def pod_mounts(tree, pod, container, problems, where):
    """The Mounts of a container; a problem for each volumeMount that names no volume."""
    mounts = []
    for vm in as_list(container.get("volumeMounts")):
        if not isinstance(vm, dict):
            continue
        name, path = vm.get("name"), vm.get("mountPath")
        volume = pod.volumes.get(name)
        if volume is None:
            problems.add(pod.obj.rel, f"{where}: volumeMount {name} names no volume of the pod "
                         f"(volumes: {', '.join(sorted(pod.volumes)) or 'none'})")
            continue
        if not isinstance(path, str):
            problems.add(pod.obj.rel, f"{where}: volumeMount {name} has no mountPath")
            continue
        read_only = vm.get("readOnly") is True
        source = f"volume {name}"
        if "secret" in volume:
            secret = dig(volume, "secret", "secretName")
            keys = items_of(dig(volume, "secret", "items"))
            if keys is None:
                if tree.certificate_for_secret(secret):
                    keys = {k: k for k in CERT_MANAGER_KEYS}
                elif tree.find("Secret", secret):
                    s = tree.find("Secret", secret).doc
                    keys = {k: k for k in set(as_dict(s.get("data"))) |
                            set(as_dict(s.get("stringData")))}
            m = Mount(path, f"{source} (Secret {secret})", "secret",
                      set(keys) if keys is not None else None, False, secret, keys)
        elif "configMap" in volume:
            cm_name = dig(volume, "configMap", "name")
            cm = tree.find("ConfigMap", cm_name)
            keys = items_of(dig(volume, "configMap", "items"))
            if keys is None and cm is not None:
                keys = {k: k for k in set(as_dict(cm.doc.get("data"))) |
                        set(as_dict(cm.doc.get("binaryData")))}
            if cm is None:
                problems.add(pod.obj.rel, f"{where}: volume {name}: ConfigMap {cm_name} is not "
                             f"in {K8S_DIR}")
            m = Mount(path, f"{source} (ConfigMap {cm_name})", "configMap",
                      set(keys) if keys is not None else None, False, cm_name, keys)
        else:
            m = Mount(path, source, "dir", None, not read_only)
        if vm.get("subPath"):
            sub = vm["subPath"]
            if m.files is not None and sub not in m.files:
                problems.add(pod.obj.rel, f"{where}: volumeMount {name} subPath {sub}: "
                             f"{m.source} has no such file")
            m = Mount(path, f"{m.source} subPath {sub}", m.kind if m.kind != "dir" else "file",
                      {""}, False, m.ref, {"": m.keys.get(sub, sub)})
        mounts.append(m)
    return mounts


def items_of(items):
    """A volume's items as {path in the volume: key}, or None without items."""
    if not isinstance(items, list) or not items:
        return None
    return {i.get("path"): i.get("key") for i in items if isinstance(i, dict)}


def container_port(container, port):
    """A probe's or Service's port (a number or a port name) as a number, or None."""
    if isinstance(port, int):
        return port
    for p in as_list(container.get("ports")):
        if isinstance(p, dict) and p.get("name") == port:
            return p.get("containerPort")
    if isinstance(port, str) and port.isdigit():
        return int(port)
    return None


def check_security(pod, role, container, image, problems, where):
    spec_sc = as_dict(pod.spec.get("securityContext"))
    sc = as_dict(container.get("securityContext"))
    def effective(key):
        return sc[key] if key in sc else spec_sc.get(key)
    rel = pod.obj.rel
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.add(rel, f"{where}: securityContext.allowPrivilegeEscalation must be false")
    if "ALL" not in as_list(dig(sc, "capabilities", "drop")):
        problems.add(rel, f"{where}: securityContext.capabilities.drop must include ALL")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.add(rel, f"{where}: securityContext.readOnlyRootFilesystem must be true")
    if role == "init":
        return  # One-shot: may be root (e.g. to chown a hostPath), with ALL dropped first.
    if effective("runAsNonRoot") is not True:
        problems.add(rel, f"{where}: runs without runAsNonRoot: true")
    if dig(sc, "capabilities", "add"):
        problems.add(rel, f"{where}: adds capabilities {sc['capabilities']['add']}")
    uid, gid = effective("runAsUser"), effective("runAsGroup")
    if uid == 0:
        problems.add(rel, f"{where}: runAsUser is 0 (root)")
    elif uid is not None and image.uid is not None and uid != image.uid:
        problems.add(rel, f"{where}: runAsUser {uid} is not the image's uid {image.uid} "
                     f"({DOCKERFILE} USER), which owns its directories")
    if gid is not None and image.gid is not None and gid != image.gid:
        problems.add(rel, f"{where}: runAsGroup {gid} is not the image's gid {image.gid} "
                     f"({DOCKERFILE} USER)")


def check_resources(pod, container, problems, where):
    res = as_dict(container.get("resources"))
    for path in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory")):
        if dig(res, *path) is None:
            problems.add(pod.obj.rel, f"{where}: has no resources.{'.'.join(path)}")


def check_pods(tree, image, problems):
    for o in tree.objects:
        meta, spec = pod_template(o)
        if spec is None:
            continue
        if not spec:
            problems.add(o.rel, f"{o.label()} has no pod spec")
            continue
        pod = Pod(o, meta, spec)
        tree.pods.append(pod)
        if o.kind != "Pod":
            selector = as_dict(dig(o.doc, "spec", "selector", "matchLabels"))
            if not selector or any(pod.labels.get(k) != v for k, v in selector.items()):
                problems.add(o.rel, f"{o.label()}: spec.selector.matchLabels {selector} does not "
                             f"match the pod template's labels {pod.labels}")
        names = [v.get("name") for v in as_list(spec.get("volumes")) if isinstance(v, dict)]
        for name in sorted({n for n in names if names.count(n) > 1}):
            problems.add(o.rel, f"{o.label()}: volume {name} is declared twice")
        for v in pod.volumes.values():
            secret = dig(v, "secret", "secretName")
            if "secret" in v:
                cert = tree.certificate_for_secret(secret)
                if cert is None and not tree.find("Secret", secret):
                    made = sorted(str(dig(c.doc, "spec", "secretName"))
                                  for c in tree.by_kind("Certificate"))
                    problems.add(o.rel, f"{o.label()}: volume {v['name']}: Secret {secret} is "
                                 "made by no Certificate (secretNames: "
                                 f"{', '.join(made) or 'none'})")
                elif cert is not None and dig(cert.doc, "spec", "isCA") is True:
                    problems.add(o.rel, f"{o.label()}: volume {v['name']}: Secret {secret} is the "
                                 f"CA's ({cert.label()}), with the CA's private key")
        for role, c in pod.containers:
            where = f"{o.label()}: container {c.get('name')}"
            img = c.get("image")
            if not isinstance(img, str) or not img:
                problems.add(o.rel, f"{where} has no image")
            elif image.name and effective_image(tree, img) != image.name:
                problems.add(o.rel, f"{where}: image {effective_image(tree, img)} is not "
                             f"{image.name} (the image {DOCKERFILE} documents)")
            check_security(pod, role, c, image, problems, where)
            check_resources(pod, c, problems, where)
            mounts = pod_mounts(tree, pod, c, problems, where)
            argv = argv_of(c.get("command"), c.get("args"), image.entrypoint, image.cmd)
            check_client_files(problems, o.rel, where, c.get("env"), argv, mounts)
            if role != "init" and program(argv) == "pipegated":
                check_k8s_gateway(tree, pod, c, argv, mounts, image, problems, where)


def check_client_files(problems, rel, where, env, argv, mounts):
    """PIPEGATE_CERT/KEY/CA and --cert/--key/--ca name files in the container's mounts."""
    env_values = {}
    for e in env if isinstance(env, list) else []:
        if isinstance(e, dict):
            env_values[e.get("name")] = e.get("value")
    if isinstance(env, dict):  # compose's mapping form.
        env_values = dict(env)
    for var, flag in (("PIPEGATE_CERT", "--cert"), ("PIPEGATE_KEY", "--key"),
                      ("PIPEGATE_CA", "--ca")):
        value = option_value(argv, flag) if program(argv) == "pipegate" else None
        what = flag
        if value is None and env_values.get(var) is not None:
            value, what = env_values[var], var
        if value is not None:
            check_file_in_mounts(problems, rel, where, what, value, mounts)


def check_k8s_gateway(tree, pod, c, argv, mounts, image, problems, where):
    rel = pod.obj.rel
    config_path = option_value(argv[1:], "--config", "-c")
    if config_path is None:
        problems.add(rel, f"{where}: runs pipegated without --config")
        return
    mount, name = find_mount(mounts, config_path)
    if mount is None or mount.kind not in ("configMap", "file") or mount.ref is None:
        problems.add(rel, f"{where}: --config {config_path} is not a file of a mounted ConfigMap")
        return
    cm = tree.find("ConfigMap", mount.ref)
    key = mount.keys.get(name, name)
    text = dig(cm.doc, "data", key) if cm else None
    if not isinstance(text, str):
        problems.add(rel, f"{where}: --config {config_path}: ConfigMap {mount.ref} has no "
                     f"key {key}")
        return
    what = f"ConfigMap {cm.name} data.{key}"
    data = parse_toml(text, cm.rel, what, problems)
    if data is None:
        return
    config = read_gateway_config(problems, cm.rel, what, data)
    pod.gateways.append((c, config))
    check_container_gateway(problems, config, where, mounts)

    ports = {}
    for p in as_list(c.get("ports")):
        if isinstance(p, dict) and isinstance(p.get("containerPort"), int):
            ports[p["containerPort"]] = p.get("name", "")
    for host, port in config.listen:
        if port not in ports:
            problems.add(rel, f"{where}: listens on {port} ({what}: listen) but declares no "
                         f"containerPort {port}")
    if config.metrics is None:
        problems.add(cm.rel, f"{what}: no metrics_listen: the kubelet has no /healthz to probe")
    else:
        host, port = config.metrics
        if is_loopback(host):
            problems.add(cm.rel, f"{what}: metrics_listen {host}:{port} is on loopback: the "
                         "kubelet's probes and Prometheus cannot reach it")
        if port not in ports:
            problems.add(rel, f"{where}: serves metrics on {port} ({what}: metrics_listen) but "
                         f"declares no containerPort {port}")
    for port, pname in sorted(ports.items()):
        if port not in config.ports():
            problems.add(rel, f"{where}: containerPort {port} ({pname}) is neither a listen port "
                         f"nor the metrics_listen port of {what}")
    if image.exposed and config.ports() != image.exposed:
        problems.add(DOCKERFILE, f"EXPOSE {' '.join(map(str, sorted(image.exposed)))} is not the "
                     f"gateway's ports {' '.join(map(str, sorted(config.ports())))} ({what})")

    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        spec = c.get(probe)
        if spec is None:
            if probe != "startupProbe":
                problems.add(rel, f"{where}: has no {probe}")
            continue
        if "httpGet" in spec:
            port = container_port(c, dig(spec, "httpGet", "port"))
            path = dig(spec, "httpGet", "path")
            if config.metrics and port != config.metrics[1]:
                problems.add(rel, f"{where}: {probe} port {dig(spec, 'httpGet', 'port')} "
                             f"({port}) is not the metrics port {config.metrics[1]} ({what}: "
                             "metrics_listen)")
            if path != HEALTH_PATH:
                problems.add(rel, f"{where}: {probe} asks for {path}, not {HEALTH_PATH}")
        elif "tcpSocket" in spec:
            port = container_port(c, dig(spec, "tcpSocket", "port"))
            if port not in config.ports():
                problems.add(rel, f"{where}: {probe} port {port} is not a port of {what}")

    limit = k8s_quantity(dig(c, "resources", "limits", "memory", default=""))
    limits = as_dict(data.get("limits"))
    held = [(k, limits.get(k, d)) for k, d in (("max_bytes_in_flight", DEFAULT_BYTES_IN_FLIGHT),
                                                ("max_replay_bytes", DEFAULT_REPLAY_BYTES))]
    sizes = [pipegate_size(v) for _, v in held]
    if None in sizes:
        problems.add(cm.rel, f"{what}: [limits] {held} are not sizes")
    elif limit is not None and sum(sizes) > limit:
        problems.add(rel, f"{where}: memory limit {dig(c, 'resources', 'limits', 'memory')} is "
                     f"less than what {what} lets clients make it hold: "
                     + " + ".join(f"{k} {v}" for k, v in held) + f" = {mib(sum(sizes))}")


def selected_pods(tree, service):
    selector = as_dict(dig(service.doc, "spec", "selector"))
    if not selector:
        return []
    return [p for p in tree.pods if p.obj.namespace == service.namespace
            and all(p.labels.get(k) == v for k, v in selector.items())]


def service_target(pod, port_spec):
    """The containerPort a Service port reaches in pod, or None."""
    target = port_spec.get("targetPort", port_spec.get("port"))
    for _, c in pod.containers:
        number = container_port(c, target)
        if number is not None and any(isinstance(p, dict) and p.get("containerPort") == number
                                      for p in as_list(c.get("ports"))):
            return number
    return None


def check_services(tree, problems):
    for svc in tree.by_kind("Service"):
        pods = selected_pods(tree, svc)
        if not pods:
            problems.add(svc.rel, f"{svc.label()}: selector "
                         f"{dig(svc.doc, 'spec', 'selector')} matches no pod template of the tree")
            continue
        ports = [p for p in as_list(dig(svc.doc, "spec", "ports")) if isinstance(p, dict)]
        for pod in pods:
            reached = set()
            for p in ports:
                number = service_target(pod, p)
                if number is None:
                    problems.add(svc.rel, f"{svc.label()}: port {p.get('name', p.get('port'))} "
                                 f"targets {p.get('targetPort', p.get('port'))}, which no "
                                 f"container of {pod.obj.label()} declares")
                reached.add(number)
            annotations = as_dict(dig(svc.doc, "metadata", "annotations"))
            for _, config in pod.gateways:
                for port in sorted(config.ports()):
                    if port not in reached:
                        problems.add(svc.rel, f"{svc.label()}: no port reaches {pod.obj.label()}'s "
                                     f"port {port} ({config.what})")
                if config.metrics is None:
                    continue
                metrics = str(config.metrics[1])
                if annotations.get("prometheus.io/scrape") != "true":
                    problems.add(svc.rel, f"{svc.label()}: prometheus.io/scrape is not \"true\"")
                if str(annotations.get("prometheus.io/port")) != metrics:
                    problems.add(svc.rel, f"{svc.label()}: prometheus.io/port "
                                 f"{annotations.get('prometheus.io/port')} is not the metrics port "
                                 f"{metrics} ({config.what}: metrics_listen)")
                if annotations.get("prometheus.io/path", METRICS_PATH) != METRICS_PATH:
                    problems.add(svc.rel, f"{svc.label()}: prometheus.io/path "
                                 f"{annotations['prometheus.io/path']} is not {METRICS_PATH}")


def check_certificates(tree, problems):
    certs = tree.by_kind("Certificate")
    if not certs:
        problems.add(K8S_DIR, "has no cert-manager Certificate for the gateway")
    for cert in certs:
        ref = as_dict(dig(cert.doc, "spec", "issuerRef"))
        kind = ref.get("kind", "Issuer")
        if not tree.find(kind, ref.get("name")):
            problems.add(cert.rel, f"{cert.label()}: issuerRef names {kind} {ref.get('name')}, "
                         "which is not in the tree")
        if not isinstance(dig(cert.doc, "spec", "secretName"), str):
            problems.add(cert.rel, f"{cert.label()} has no spec.secretName")
    for issuer in tree.by_kind("Issuer") + tree.by_kind("ClusterIssuer"):
        secret = dig(issuer.doc, "spec", "ca", "secretName")
        if secret is not None:
            ca = tree.certificate_for_secret(secret)
            if ca is None or dig(ca.doc, "spec", "isCA") is not True:
                problems.add(issuer.rel, f"{issuer.label()}: spec.ca.secretName {secret} is no "
                             "isCA Certificate's secretName")


def certificate_behind(tree, mounts, path):
    mount, _ = find_mount(mounts, path) if isinstance(path, str) else (None, None)
    if mount is None or mount.kind != "secret":
        return None
    return tree.certificate_for_secret(mount.ref)


def identities_of(cert):
    spec = as_dict(cert.doc.get("spec"))
    return {"cn": {spec["commonName"]} if isinstance(spec.get("commonName"), str) else set(),
            "dns": set(as_list(spec.get("dnsNames"))), "uri": set(as_list(spec.get("uris")))}


def service_by_host(tree, host, namespace):
    parts = host.split(".")
    for svc in tree.by_kind("Service"):
        names = {svc.name, f"{svc.name}.{svc.namespace}", f"{svc.name}.{svc.namespace}.svc",
                 f"{svc.name}.{svc.namespace}.svc.cluster.local"}
        if host in names and (len(parts) > 1 or svc.namespace == namespace):
            return svc
    return None


def check_k8s_clients(tree, image, problems):
    for pod in tree.pods:
        for role, c in pod.containers:
            argv = argv_of(c.get("command"), c.get("args"), image.entrypoint, image.cmd)
            if program(argv) != "pipegate":
                continue
            where = f"{pod.obj.label()}: container {c.get('name')}"
            mounts = pod_mounts(tree, pod, c, Problems(), where)
            env = {e.get("name"): e.get("value") for e in as_list(c.get("env"))
                   if isinstance(e, dict)}
            client_cert = certificate_behind(tree, mounts, option_value(argv, "--cert")
                                             or env.get("PIPEGATE_CERT"))
            servername = option_value(argv, "--servername")
            for address in [w for w in argv if w.startswith("pipe://")]:
                check_k8s_address(tree, pod, where, address, servername, client_cert, problems)


def check_k8s_address(tree, pod, where, address, servername, client_cert, problems):
    rel = pod.obj.rel
    m = ADDRESS_RE.match(address)
    if not m:
        problems.add(rel, f"{where}: {address} is not pipe://HOST[:PORT]/NAME")
        return
    host, port, name = m.group(1), int(m.group(2) or DEFAULT_PORT), m.group(3)
    svc = service_by_host(tree, host, pod.obj.namespace)
    if svc is None:
        problems.add(rel, f"{where}: {address}: {host} is no Service of {K8S_DIR}")
        return
    svc_port = [p for p in as_list(dig(svc.doc, "spec", "ports"))
                if isinstance(p, dict) and p.get("port") == port]
    if not svc_port:
        problems.add(rel, f"{where}: {address}: {svc.label()} has no port {port}")
        return
    gateways = [(g, c, cfg) for g in selected_pods(tree, svc) for c, cfg in g.gateways]
    if not gateways:
        problems.add(rel, f"{where}: {address}: {svc.label()} selects no gateway")
    for gw, gc, config in gateways:
        target = service_target(gw, svc_port[0])
        if target not in {p for _, p in config.listen}:
            problems.add(rel, f"{where}: {address}: {svc.label()} port {port} reaches port "
                         f"{target} of {gw.obj.label()}, which is not a listen port of "
                         f"{config.what}")
        export = config.exports.get(name)
        if export is None:
            problems.add(rel, f"{where}: {address}: {config.what} has no export {name} "
                         f"(exports: {', '.join(sorted(config.exports)) or 'none'})")
        gw_mounts = pod_mounts(tree, gw, gc, Problems(), "")
        gw_cert = certificate_behind(tree, gw_mounts, dig(config.data, "gateway", "cert"))
        if gw_cert is not None:
            expected = servername or host
            names = as_list(dig(gw_cert.doc, "spec", "dnsNames")) + \
                as_list(dig(gw_cert.doc, "spec", "ipAddresses"))
            if expected not in names:
                problems.add(rel, f"{where}: {address}: the gateway's certificate "
                             f"({gw_cert.label()}) does not name {expected} (it names "
                             f"{', '.join(map(str, names)) or 'nothing'})")
            usages = as_list(dig(gw_cert.doc, "spec", "usages"))
            if usages and "server auth" not in usages:
                problems.add(gw_cert.rel, f"{gw_cert.label()}: usages lack \"server auth\"")
        if client_cert is None:
            problems.add(rel, f"{where}: {address}: its client certificate is no Certificate's "
                         "Secret, so who it is cannot be checked")
            continue
        usages = as_list(dig(client_cert.doc, "spec", "usages"))
        if usages and "client auth" not in usages:
            problems.add(client_cert.rel, f"{client_cert.label()}: usages lack \"client auth\"")
        if gw_cert is not None and dig(gw_cert.doc, "spec", "issuerRef") != \
                dig(client_cert.doc, "spec", "issuerRef"):
            problems.add(rel, f"{where}: {address}: {client_cert.label()} and the gateway's "
                         f"{gw_cert.label()} have different issuers, so neither side's ca.crt "
                         "checks the other")
        if export is not None:
            ids = identities_of(client_cert)
            if not identities_admitted(as_list(export.get("allow")), ids):
                shown = sorted(ids["cn"] | ids["dns"] | ids["uri"])
                problems.add(rel, f"{where}: {address}: export {name} ({config.what}) allows "
                             f"{export.get('allow')}, not {client_cert.label()}'s identities "
                             f"{shown}")


# ---- Compose -------------------------------------------------------------------------------


def compose_mounts(root, service, declared_volumes, problems, where):
    """The Mounts of a compose service; problems for missing files and undeclared volumes."""
    compose_dir = posixpath.dirname(COMPOSE)
    mounts = []
    for v in as_list(service.get("volumes")):
        if isinstance(v, str):
            # ${VAR:?message} may hold colons; it stands for a path the user makes.
            parts = re.sub(r"\$\{[^}]*\}", "$VAR", v).split(":")
            if len(parts) == 1:
                mounts.append(Mount(parts[0], "an anonymous volume", "dir"))
                continue
            source, target = parts[0], parts[1]
            read_only = len(parts) > 2 and "ro" in parts[2].split(",")
            bind = source.startswith((".", "/", "~", "$"))
        elif isinstance(v, dict):
            source, target = str(v.get("source", "")), str(v.get("target", ""))
            read_only = v.get("read_only") is True
            bind = v.get("type") == "bind"
        else:
            continue
        if not bind:
            if source not in declared_volumes:
                problems.add(COMPOSE, f"{where}: volume {source} is not declared under volumes:")
            mounts.append(Mount(target, f"volume {source}", "dir", None, not read_only))
            continue
        if "$" in source or source.startswith(("/", "~")):
            # Made by the user (README.md) or the host's own: nothing to check here.
            mounts.append(Mount(target, f"bind mount {source}", "dir", None, not read_only))
            continue
        path = posixpath.normpath(posixpath.join(compose_dir, source))
        full = os.path.join(root, path)
        if not os.path.exists(full):
            problems.add(COMPOSE, f"{where}: bind mount {source} does not exist ({path})")
            mounts.append(Mount(target, f"bind mount {source}", "dir", None, not read_only))
        elif os.path.isfile(full):
            mounts.append(Mount(target, f"bind mount {source}", "file", {""}, False, path))
        else:
            files = set()
            for dirpath, _, filenames in os.walk(full):
                files |= {os.path.relpath(os.path.join(dirpath, f), full) for f in filenames}
            mounts.append(Mount(target, f"bind mount {source}", "dir", files, not read_only, path))
    return mounts


def published_ports(service, problems, where):
    """[(host, published, container)] of a compose service's ports."""
    out = []
    for p in as_list(service.get("ports")):
        if isinstance(p, dict):
            out.append((p.get("host_ip", ""), p.get("published"), p.get("target")))
            continue
        m = re.fullmatch(r"(?:(\[[^\]]+\]|[^:]+):)??(?:(\d+):)?(\d+)(?:/\w+)?", str(p))
        if not m:
            problems.add(COMPOSE, f"{where}: ports entry {p!r} is not [HOST:]PORT:PORT")
            continue
        out.append((m.group(1) or "", int(m.group(2)) if m.group(2) else None, int(m.group(3))))
    return out


def read_toml_file(root, rel, problems):
    text = read_text(root, rel)
    if text is None:
        problems.add(rel, "cannot be read")
        return None
    return parse_toml(text, rel, "the file", problems)


def check_compose(root, image, problems):
    docs = load_yaml_documents(root, COMPOSE, problems) if os.path.exists(
        os.path.join(root, COMPOSE)) else None
    if docs is None:
        problems.add(COMPOSE, "is missing")
        return 0
    if len(docs) != 1 or not isinstance(dig(docs, 0, "services"), dict):
        if docs:
            problems.add(COMPOSE, "must be one mapping with services:")
        return 0
    compose = docs[0]
    declared = set(as_dict(compose.get("volumes")))
    gateways = {}  # service name -> GatewayConfig
    clients = []
    for name, service in compose["services"].items():
        where = f"service {name}"
        if not isinstance(service, dict):
            problems.add(COMPOSE, f"{where} is not a mapping")
            continue
        img = service.get("image")
        if not isinstance(img, str):
            problems.add(COMPOSE, f"{where} has no image")
        elif image.name and img != image.name:
            problems.add(COMPOSE, f"{where}: image {img} is not {image.name} (the image "
                         f"{DOCKERFILE} documents)")
        build = service.get("build")
        if build is not None:
            context = build if isinstance(build, str) else str(as_dict(build).get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else str(
                as_dict(build).get("dockerfile", "Dockerfile"))
            ctx = posixpath.normpath(posixpath.join(posixpath.dirname(COMPOSE), context))
            df = posixpath.normpath(posixpath.join(ctx, dockerfile))
            if not os.path.isdir(os.path.join(root, ctx)):
                problems.add(COMPOSE, f"{where}: build context {context} does not exist ({ctx})")
            elif df != DOCKERFILE:
                problems.add(COMPOSE, f"{where}: builds {df}, not {DOCKERFILE}")
            elif ctx != ".":
                problems.add(COMPOSE, f"{where}: build context {context} is not the top of the "
                             f"repository, which {DOCKERFILE} copies")
        elif service.get("pull_policy") != "never":
            problems.add(COMPOSE, f"{where}: {img} is built here, not pulled: without build:, "
                         "it needs pull_policy: never")
        user = str(service.get("user", ""))
        if user.split(":")[0] in ("0", "root"):
            problems.add(COMPOSE, f"{where}: runs as root (user: {user})")
        for env_file in as_list(service.get("env_file")) + (
                [service["env_file"]] if isinstance(service.get("env_file"), str) else []):
            path = posixpath.normpath(posixpath.join(posixpath.dirname(COMPOSE), str(env_file)))
            if "$" not in str(env_file) and not os.path.isfile(os.path.join(root, path)):
                problems.add(COMPOSE, f"{where}: env_file {env_file} does not exist ({path})")
        mounts = compose_mounts(root, service, declared, problems, where)
        argv = argv_of(service.get("entrypoint"), service.get("command"), image.entrypoint,
                       image.cmd)
        check_client_files(problems, COMPOSE, where, service.get("environment"), argv, mounts)
        if program(argv) == "pipegated":
            config = check_compose_gateway(root, where, service, argv, mounts, image, problems)
            if config is not None:
                gateways[name] = config
        elif program(argv) == "pipegate":
            clients.append((name, service, argv))

    host_config = None
    if os.path.exists(os.path.join(root, HOST_GATEWAY)):
        data = read_toml_file(root, HOST_GATEWAY, problems)
        if data is not None:
            host_config = read_gateway_config(problems, HOST_GATEWAY, "the file", data)
    for name, service, argv in clients:
        where = f"service {name}"
        for address in [w for w in argv if w.startswith("pipe://")]:
            m = ADDRESS_RE.match(address)
            if not m:
                problems.add(COMPOSE, f"{where}: {address} is not pipe://HOST[:PORT]/NAME")
                continue
            host, port, export = m.group(1), int(m.group(2) or DEFAULT_PORT), m.group(3)
            if host == HOST_GATEWAY_ALIAS:
                hosts = service.get("extra_hosts")
                entries = [f"{k}:{v}" for k, v in hosts.items()] if isinstance(hosts, dict) \
                    else [str(h).replace("=", ":", 1) for h in as_list(hosts)]
                if f"{HOST_GATEWAY_ALIAS}:host-gateway" not in entries:
                    problems.add(COMPOSE, f"{where}: dials {HOST_GATEWAY_ALIAS} without "
                                 f"extra_hosts \"{HOST_GATEWAY_ALIAS}:host-gateway\"")
                if host_config is None:
                    problems.add(COMPOSE, f"{where}: dials the host's gateway, but {HOST_GATEWAY} "
                                 "is missing")
                    continue
                config = host_config
            elif host in gateways:
                config = gateways[host]
            else:
                problems.add(COMPOSE, f"{where}: {address}: {host} is neither "
                             f"{HOST_GATEWAY_ALIAS} nor a gateway service of {COMPOSE}")
                continue
            if port not in {p for _, p in config.listen}:
                problems.add(COMPOSE, f"{where}: {address}: {config.rel} does not listen on {port}")
            if export not in config.exports:
                problems.add(COMPOSE, f"{where}: {address}: {config.rel} has no export {export} "
                             f"(exports: {', '.join(sorted(config.exports)) or 'none'})")
    return len(compose["services"])


def check_compose_gateway(root, where, service, argv, mounts, image, problems):
    config_path = option_value(argv[1:], "--config", "-c")
    if config_path is None:
        problems.add(COMPOSE, f"{where}: runs pipegated without --config")
        return None
    mount, name = find_mount(mounts, config_path)
    if mount is None or mount.ref is None or (
            mount.kind == "dir" and name not in (mount.files or ())):
        problems.add(COMPOSE, f"{where}: --config {config_path} is no file of the repository "
                     "mounted into the service")
        return None
    rel = mount.ref if mount.kind == "file" else posixpath.join(mount.ref, name)
    data = read_toml_file(root, rel, problems)
    if data is None:
        return None
    config = read_gateway_config(problems, rel, "the file", data)
    check_container_gateway(problems, config, where, mounts)
    listen = {p for _, p in config.listen}
    published = published_ports(service, problems, where)
    for host, outside, inside in published:
        if inside not in config.ports():
            problems.add(COMPOSE, f"{where}: publishes container port {inside}, on which {rel} "
                         "does not listen")
        elif config.metrics and inside == config.metrics[1] and is_loopback(config.metrics[0]):
            problems.add(rel, f"metrics_listen {config.metrics[0]}:{inside} is on loopback, so "
                         f"the port {COMPOSE} publishes reaches nothing")
    if not listen & {inside for _, _, inside in published}:
        problems.add(COMPOSE, f"{where}: publishes none of the ports {rel} listens on "
                     f"({', '.join(map(str, sorted(listen)))})")
    for port in sorted(config.ports()):
        if image.exposed and port not in image.exposed:
            problems.add(DOCKERFILE, f"does not EXPOSE {port}, a port of {rel}")
    test = dig(service, "healthcheck", "test")
    text = " ".join(map(str, test)) if isinstance(test, list) else str(test or "")
    if HEALTH_PATH in text:
        m = re.search(r"/dev/tcp/[^/\s]+/(\d+)|:(\d+)/healthz", text)
        port = int(m.group(1) or m.group(2)) if m else None
        if config.metrics is None:
            problems.add(COMPOSE, f"{where}: healthcheck asks {HEALTH_PATH}, but {rel} has no "
                         "metrics_listen")
        elif port != config.metrics[1]:
            problems.add(COMPOSE, f"{where}: healthcheck asks port {port}, not the metrics port "
                         f"{config.metrics[1]} of {rel}")
    return config


# ---- pipegated --check-config --------------------------------------------------------------


def point_tls_at_pki(text, pki):
    """The configuration with [gateway] cert, key, client_ca and crl set to the test PKI."""
    files = {"cert": "gateway.crt", "key": "gateway.key", "client_ca": "ca.crt",
             "crl": "crl-empty.pem"}
    out, table = [], None
    for line in text.splitlines(keepends=True):
        header = re.match(r"\s*(\[\[?[^\]]*\]\]?)", line)
        if header:
            table = re.sub(r"\s", "", header.group(1))
        elif table == "[gateway]":
            m = re.match(r"(\s*)(cert|key|client_ca|crl)(\s*=\s*)(\"[^\"]*\"|'[^']*')(.*)$", line)
            if m:
                value = json.dumps(os.path.join(pki, files[m.group(2)]))
                line = f"{m.group(1)}{m.group(2)}{m.group(3)}{value}{m.group(5)}\n"
        out.append(line)
    return "".join(out)


def check_with_pipegated(root, tree, pipegated, pki, problems):
    configs = []  # (rel, what, text)
    for cm in tree.by_kind("ConfigMap"):
        for key, text in sorted(as_dict(cm.doc.get("data")).items()):
            if key.endswith(".toml") and isinstance(text, str):
                configs.append((cm.rel, f"ConfigMap {cm.name} data.{key}", text))
    container_dir = os.path.join(root, CONTAINER_DIR)
    for f in sorted(os.listdir(container_dir)) if os.path.isdir(container_dir) else []:
        if f.endswith(".toml"):
            rel = f"{CONTAINER_DIR}/{f}"
            configs.append((rel, "the file", read_text(root, rel) or ""))
    with tempfile.TemporaryDirectory(prefix="check-deploy.") as tmp:
        for i, (rel, what, text) in enumerate(configs):
            pointed = point_tls_at_pki(text, pki)
            try:
                gateway = as_dict(tomllib.loads(pointed).get("gateway"))
            except tomllib.TOMLDecodeError:
                continue  # Reported as a parse error already.
            if any(not str(gateway.get(k, pki)).startswith(pki)
                   for k in ("cert", "key", "client_ca")):
                problems.add(rel, f"{what}: cannot point cert, key and client_ca at the test PKI "
                             "(each must be one quoted string on its line under [gateway])")
                continue
            path = os.path.join(tmp, f"{i}-{posixpath.basename(rel)}.toml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(pointed)
            try:
                run = subprocess.run([pipegated, "--check-config", path], capture_output=True,
                                     text=True, timeout=60, check=False)
            except (OSError, subprocess.TimeoutExpired) as err:
                problems.add(rel, f"{what}: pipegated --check-config could not run: {err}")
                continue
            if run.returncode != 0:
                said = " | ".join(l.strip() for l in (run.stderr + run.stdout).splitlines()
                                  if l.strip())
                problems.add(rel, f"{what}: pipegated --check-config refuses it (exit "
                             f"{run.returncode}): {said.replace(path, '<config>')}")
    return len(configs)


# ---- Main ----------------------------------------------------------------------------------


def project_version(root, problems):
    text = read_text(root, CMAKELISTS)
    m = re.search(r"project\(\s*pipegate\s+VERSION\s+([0-9][^\s)]*)", text or "")
    if not m:
        problems.add(CMAKELISTS, "has no project(pipegate VERSION ...)")
        return None
    return m.group(1)


def main(argv=None):
    default_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(
        description="Check that deploy/container and deploy/kubernetes hold together.")
    parser.add_argument("--root", default=default_root,
                        help="the tree to check (default: this script's repository)")
    parser.add_argument("--pipegated", help="also run PIPEGATED --check-config on every gateway "
                        "configuration (needs --pki)")
    parser.add_argument("--pki", help="directory made by tests/make_test_pki.sh (gateway.crt, "
                        "gateway.key, ca.crt) for --pipegated")
    args = parser.parse_args(argv)
    if bool(args.pipegated) != bool(args.pki):
        parser.error("--pipegated and --pki go together")
    root = os.path.abspath(args.root)
    problems = Problems()

    version = project_version(root, problems)
    image = check_dockerfile(root, version, problems)
    tree = read_kubernetes(root, problems)
    check_kustomization(tree, problems)
    check_namespaces(tree, problems)
    check_certificates(tree, problems)
    check_pods(tree, image, problems)
    if not any(pod.gateways for pod in tree.pods):
        problems.add(K8S_DIR, "has no gateway: no container runs pipegated with a ConfigMap's "
                     "configuration")
    check_services(tree, problems)
    check_k8s_clients(tree, image, problems)
    services = check_compose(root, image, problems)
    checked = 0
    if args.pipegated:
        checked = check_with_pipegated(root, tree, os.path.abspath(args.pipegated),
                                       os.path.abspath(args.pki), problems)

    for path, message in problems.items:
        print(f"{path}: {message}", file=sys.stderr)
    if problems.items:
        print(f"check-deploy: {len(problems.items)} problem(s) in {root}", file=sys.stderr)
        return 1
    summary = (f"check-deploy: OK: {len(tree.objects)} Kubernetes objects in {len(tree.files)} "
               f"files, {services} compose services, image {image.name}")
    if args.pipegated:
        summary += f", {checked} configurations accepted by pipegated --check-config"
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
