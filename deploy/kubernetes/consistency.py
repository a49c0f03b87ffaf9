"""What no schema sees in deploy/kubernetes: the manifests and wsgate.toml
must agree with each other.

- the kustomization lists every manifest here, and each file it names exists;
- Services and probes name ports the container has, and the container's
  ports are the ones wsgate.toml binds;
- the ServiceMonitor selects the admin Service and names one of its ports;
- the config and the certificate are mounted where wsgate.toml and the
  container's arguments expect them, as whole directories (a subPath mount
  never sees an update, so the file-watch reload would not happen);
- the termination grace period outlasts the preStop sleep and the drain.

Usage: python consistency.py deploy/kubernetes
"""

import re
import sys
import tomllib
from pathlib import Path

import yaml

problems = []


def check(condition, message):
    if not condition:
        problems.append(message)


def seconds(duration):
    """A wsgate duration such as "30s", "250ms", "5m" in seconds."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", duration)
    if not match:
        raise ValueError(f"not a duration: {duration!r}")
    value, unit = int(match[1]), match[2]
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def port_of(bind):
    return int(bind.rsplit(":", 1)[1])


def main(directory):
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    generated = {
        name for generator in kustomization.get("configMapGenerator", []) for name in generator["files"]
    }
    for name in sorted(listed | generated):
        check((directory / name).is_file(), f"kustomization.yaml names {name}, which does not exist")
    for path in sorted(directory.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            check(path.name in listed, f"{path.name} is not listed in kustomization.yaml resources")

    resources = {}
    for name in listed:
        for document in yaml.safe_load_all((directory / name).read_text()):
            resources[(document["kind"], document["metadata"]["name"])] = document
    config = tomllib.loads((directory / "wsgate.toml").read_text())

    pod = resources[("Deployment", "wsgate")]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}

    listener_ports = sorted(port_of(listener["bind"]) for listener in config["listeners"])
    check(
        listener_ports == sorted(ports[name] for name in ("http", "https")),
        f"the container's http/https ports {ports} are not the listeners {listener_ports}",
    )
    check(
        port_of(config["admin"]["bind"]) == ports.get("admin"),
        "the container's admin port is not [admin] bind",
    )
    check(
        config["admin"]["bind"].startswith("0.0.0.0:"),
        "[admin] bind must accept the kubelet's probes from outside the pod",
    )
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container[probe]["httpGet"]
        check(get["path"] == path and get["port"] == "admin", f"{probe} should GET {path} on the admin port")

    for service_name in ("wsgate", "wsgate-admin"):
        service = resources[("Service", service_name)]
        for port in service["spec"]["ports"]:
            check(
                port["targetPort"] in ports,
                f"Service {service_name} targets port {port['targetPort']!r}, which the container lacks",
            )
    public = {port["port"] for port in resources[("Service", "wsgate")]["spec"]["ports"]}
    check(public == {80, 443}, f"the public Service serves {public}, not 80 and 443")

    admin_service = resources[("Service", "wsgate-admin")]
    monitor = resources[("ServiceMonitor", "wsgate")]
    # kustomize adds app.kubernetes.io/name to every resource's labels.
    admin_labels = {**admin_service["metadata"].get("labels", {}), **kustomization["labels"][0]["pairs"]}
    for key, value in monitor["spec"]["selector"]["matchLabels"].items():
        check(admin_labels.get(key) == value, f"the ServiceMonitor selects {key}={value}, the admin Service lacks it")
    admin_port_names = {port["name"] for port in admin_service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        check(endpoint["port"] in admin_port_names, f"the ServiceMonitor scrapes port {endpoint['port']!r}")
        check(endpoint["path"] == "/metrics", "the ServiceMonitor must scrape /metrics")

    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {}
    for mount in container["volumeMounts"]:
        check("subPath" not in mount, f"volume {mount['name']} is mounted with subPath: updates never arrive")
        mounts[mount["mountPath"]] = volumes[mount["name"]]
    config_path = Path(container["args"][container["args"].index("--config") + 1])
    config_volume = mounts.get(str(config_path.parent), {})
    check(
        config_volume.get("configMap", {}).get("name") == "wsgate-config",
        f"{config_path.parent} is not the wsgate-config ConfigMap",
    )
    secret = resources[("Secret", "wsgate-tls")]
    for listener in config["listeners"]:
        for pair in listener.get("tls", {}).get("certificates", []):
            for file in (pair["cert"], pair["key"]):
                path = Path(file)
                volume = mounts.get(str(path.parent), {})
                check(
                    volume.get("secret", {}).get("secretName") == "wsgate-tls",
                    f"{file} is not in the mounted wsgate-tls Secret",
                )
                check(path.name in secret["data"], f"the Secret has no {path.name}")

    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    server = config.get("server", {})
    drain = seconds(server.get("shutdown_timeout", "30s"))
    grace = pod["terminationGracePeriodSeconds"]
    check(
        grace > pre_stop + drain,
        f"terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop}s + shutdown_timeout {drain}s",
    )
    for security in (pod["securityContext"], container["securityContext"]):
        check(security.get("runAsNonRoot", True), "the pod must run as non-root")
    check(container["securityContext"].get("readOnlyRootFilesystem") is True, "the root filesystem must be read-only")

    if problems:
        for problem in problems:
            print(f"{directory}: {problem}", file=sys.stderr)
        sys.exit(1)
    print(f"{directory}: manifests and wsgate.toml agree")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
