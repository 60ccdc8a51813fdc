# Planted faults for scripts/check-deploy.py, one per case: a copy of the tree's deploy/ with one
# change, and the line the checker must print for it (run-case.cmake makes and judges the copy;
# tests/ops/deploy.cmake registers one ctest per case, deploy_refuses_<NAME>).
#
#   deploy_bad_case(NAME FILE PATH FROM TEXT TO TEXT SAYS LINE)  replace TEXT (once in the file)
#   deploy_bad_case(NAME FILE PATH WRITE TEXT SAYS LINE)         add a file
#   deploy_bad_case(NAME FILE PATH REMOVE SAYS LINE)             remove a file
#   ... CHECK_CONFIG: the checker also runs pipegated --check-config (needs the build and PKI)
#
# PATH is relative to the top of the repository. TEXT and LINE are bracket arguments taken
# verbatim (a newline right after [[ is dropped); no semicolons, which CMake would split on.
# SAYS is a substring of the checker's output, starting with the file it blames.

# ---- One image everywhere ----------------------------------------------------------------

deploy_bad_case(image-tag FILE deploy/kubernetes/daemonset.yaml
  FROM [[
        - name: gateway
          image: pipegate:0.1.0]]
  TO [[
        - name: gateway
          image: pipegate:0.1.1]]
  SAYS [[deploy/kubernetes/daemonset.yaml: DaemonSet pipegate-gateway: container gateway: image pipegate:0.1.1 is not pipegate:0.1.0 (the image deploy/container/Dockerfile documents)]])

deploy_bad_case(sidecar-image-repository FILE deploy/kubernetes/bridge-sidecar.yaml
  FROM [[
        - name: pipegate-mount
          image: pipegate:0.1.0]]
  TO [[
        - name: pipegate-mount
          image: ghcr.io/example/pipegate:0.1.0]]
  SAYS [[deploy/kubernetes/bridge-sidecar.yaml: Deployment log-consumer: container pipegate-mount: image ghcr.io/example/pipegate:0.1.0 is not pipegate:0.1.0]])

deploy_bad_case(kustomize-retags FILE deploy/kubernetes/kustomization.yaml
  FROM [[
resources:]]
  TO [[
images:
  - name: pipegate
    newTag: 0.2.0
resources:]]
  SAYS [[deploy/kubernetes/daemonset.yaml: DaemonSet pipegate-gateway: container gateway: image pipegate:0.2.0 is not pipegate:0.1.0]])

deploy_bad_case(compose-image FILE deploy/container/compose.yaml
  FROM [[
  gateway:
    image: pipegate:0.1.0]]
  TO [[
  gateway:
    image: pipegate:latest]]
  SAYS [[deploy/container/compose.yaml: service gateway: image pipegate:latest is not pipegate:0.1.0]])

deploy_bad_case(version-bump FILE CMakeLists.txt
  FROM [[project(pipegate VERSION 0.1.0]]
  TO [[project(pipegate VERSION 0.2.0]]
  SAYS [[deploy/container/Dockerfile: the documented image pipegate:0.1.0 is not tagged with the project version 0.2.0 (CMakeLists.txt)]])

# ---- The Dockerfile ----------------------------------------------------------------------

deploy_bad_case(dockerfile-user-root FILE deploy/container/Dockerfile
  FROM [[USER 10001:10001]]
  TO [[USER root]]
  SAYS [[: USER root is root]])
deploy_bad_case(dockerfile-user-name FILE deploy/container/Dockerfile
  FROM [[USER 10001:10001]]
  TO [[USER pipegate]]
  SAYS [[: USER pipegate must be numeric (uid:gid), so that Kubernetes can check runAsNonRoot]])

deploy_bad_case(dockerfile-expose FILE deploy/container/Dockerfile
  FROM [[EXPOSE 7445 9745]]
  TO [[EXPOSE 7445]]
  SAYS [[deploy/container/Dockerfile: EXPOSE 7445 is not the gateway's ports 7445 9745 (ConfigMap pipegated-config data.pipegated.toml)]])

deploy_bad_case(dockerfile-final-base FILE deploy/container/Dockerfile
  FROM [[FROM debian:12-slim]]
  TO [[FROM debian:12]]
  SAYS [[: the final stage is FROM debian:12, not debian:12-slim]])

deploy_bad_case(dockerfile-no-builder FILE deploy/container/Dockerfile
  FROM [[FROM debian:12 AS builder]]
  TO [[FROM debian:12 AS build]]
  SAYS [[deploy/container/Dockerfile: has no stage named builder (FROM debian:12 AS builder)]])

deploy_bad_case(dockerfile-two-names FILE deploy/container/Dockerfile
  FROM [[# Run the bridge client from the same image:]]
  TO [[#   docker build -f deploy/container/Dockerfile -t pipegate:latest .
# Run the bridge client from the same image:]]
  SAYS [[deploy/container/Dockerfile: must document exactly one image name]])

deploy_bad_case(dockerignore-keeps-builds FILE deploy/container/Dockerfile.dockerignore
  FROM [[
build-*
]]
  TO [[
]]
  SAYS [[deploy/container/Dockerfile.dockerignore: does not exclude build-*]])

# ---- Kustomization and namespace ---------------------------------------------------------

deploy_bad_case(kustomization-forgets-a-manifest FILE deploy/kubernetes/kustomization.yaml
  FROM [[
  - service.yaml
]]
  TO [[
]]
  SAYS [[deploy/kubernetes/kustomization.yaml: does not list service.yaml in resources]])

deploy_bad_case(kustomization-stale-name FILE deploy/kubernetes/kustomization.yaml
  FROM [[
  - service.yaml
]]
  TO [[
  - services.yaml
]]
  SAYS [[deploy/kubernetes/kustomization.yaml: lists services.yaml, which is no manifest file in deploy/kubernetes]])

deploy_bad_case(manifest-not-in-kustomization FILE deploy/kubernetes/networkpolicy.yaml
  WRITE [[
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: pipegate-gateway
  namespace: pipegate
spec:
  podSelector:
    matchLabels:
      app.kubernetes.io/name: pipegate-gateway
  policyTypes: [Ingress]
]]
  SAYS [[deploy/kubernetes/kustomization.yaml: does not list networkpolicy.yaml in resources]])

deploy_bad_case(namespace-mismatch FILE deploy/kubernetes/service.yaml
  FROM [[
  name: pipegate-gateway
  namespace: pipegate]]
  TO [[
  name: pipegate-gateway
  namespace: default]]
  SAYS [[deploy/kubernetes/service.yaml: Service pipegate-gateway is in namespace default, not pipegate]])

deploy_bad_case(no-metadata-name FILE deploy/kubernetes/configmap.yaml
  FROM [[
  name: pipegated-config
]]
  TO [[
]]
  SAYS [[deploy/kubernetes/configmap.yaml: document 1 (ConfigMap) has no metadata.name]])

deploy_bad_case(duplicate-key FILE deploy/kubernetes/service.yaml
  FROM [[
  type: ClusterIP
]]
  TO [[
  type: ClusterIP
  type: NodePort
]]
  SAYS [[deploy/kubernetes/service.yaml: YAML does not parse: line 24: duplicate key 'type']])

# ---- The gateway's configuration, mounts and ports ----------------------------------------

deploy_bad_case(toml-syntax FILE deploy/kubernetes/configmap.yaml
  FROM [[log_format = "json"]]
  TO [[log_format = "json]]
  SAYS [[deploy/kubernetes/configmap.yaml: ConfigMap pipegated-config data.pipegated.toml does not parse as TOML: ]])

deploy_bad_case(log-format-text FILE deploy/container/container-gateway.toml
  FROM [[log_format = "json"]]
  TO [[log_format = "text"]]
  SAYS [[deploy/container/container-gateway.toml: the file: log_format is 'text', but in a container it must be "json"]])

deploy_bad_case(cert-outside-mounts FILE deploy/kubernetes/configmap.yaml
  FROM [[cert = "/etc/pipegate/tls/tls.crt"]]
  TO [[cert = "/etc/ssl/pipegate/tls.crt"]]
  SAYS [[deploy/kubernetes/configmap.yaml: DaemonSet pipegate-gateway: container gateway: ConfigMap pipegated-config data.pipegated.toml: cert /etc/ssl/pipegate/tls.crt is not under any mount of the container]])

deploy_bad_case(key-not-in-secret FILE deploy/kubernetes/configmap.yaml
  FROM [[key = "/etc/pipegate/tls/tls.key"]]
  TO [[key = "/etc/pipegate/tls/gateway.key"]]
  SAYS [[ConfigMap pipegated-config data.pipegated.toml: key /etc/pipegate/tls/gateway.key: volume tls (Secret pipegate-gateway-tls) at /etc/pipegate/tls has no file gateway.key (it has ca.crt, tls.crt, tls.key)]])

deploy_bad_case(fifo-on-read-only-mount FILE deploy/kubernetes/configmap.yaml
  FROM [[path = "/run/pipegate/node-logs.fifo"]]
  TO [[path = "/etc/pipegate/config/node-logs.fifo"]]
  SAYS [[export node-logs: path /etc/pipegate/config/node-logs.fifo is made by the gateway (create = true), but volume config (ConfigMap pipegated-config) at /etc/pipegate/config is read-only]])

deploy_bad_case(config-path-not-in-configmap FILE deploy/kubernetes/daemonset.yaml
  FROM [[args: ["--config", "/etc/pipegate/config/pipegated.toml"]
]]
  TO [[args: ["--config", "/etc/pipegate/config/gateway.toml"]
]]
  SAYS [[deploy/kubernetes/daemonset.yaml: DaemonSet pipegate-gateway: container gateway: --config /etc/pipegate/config/gateway.toml: ConfigMap pipegated-config has no key gateway.toml]])

deploy_bad_case(container-port FILE deploy/kubernetes/daemonset.yaml
  FROM [[containerPort: 7445]]
  TO [[containerPort: 7446]]
  SAYS [[deploy/kubernetes/daemonset.yaml: DaemonSet pipegate-gateway: container gateway: listens on 7445 (ConfigMap pipegated-config data.pipegated.toml: listen) but declares no containerPort 7445]])

deploy_bad_case(metrics-port FILE deploy/kubernetes/configmap.yaml
  FROM [[metrics_listen = "0.0.0.0:9745"]]
  TO [[metrics_listen = "0.0.0.0:9746"]]
  SAYS [[container gateway: serves metrics on 9746 (ConfigMap pipegated-config data.pipegated.toml: metrics_listen) but declares no containerPort 9746]])

deploy_bad_case(metrics-on-loopback FILE deploy/kubernetes/configmap.yaml
  FROM [[metrics_listen = "0.0.0.0:9745"]]
  TO [[metrics_listen = "127.0.0.1:9745"]]
  SAYS [[deploy/kubernetes/configmap.yaml: ConfigMap pipegated-config data.pipegated.toml: metrics_listen 127.0.0.1:9745 is on loopback: the kubelet's probes and Prometheus cannot reach it]])

deploy_bad_case(readiness-probe-port FILE deploy/kubernetes/daemonset.yaml
  FROM [[
              port: metrics
            periodSeconds: 5]]
  TO [[
              port: pipegate
            periodSeconds: 5]]
  SAYS [[container gateway: readinessProbe port pipegate (7445) is not the metrics port 9745]])

deploy_bad_case(liveness-probe-path FILE deploy/kubernetes/daemonset.yaml
  FROM [[
              path: /healthz
              port: metrics
            initialDelaySeconds: 10]]
  TO [[
              path: /metrics
              port: metrics
            initialDelaySeconds: 10]]
  SAYS [[container gateway: livenessProbe asks for /metrics, not /healthz]])

deploy_bad_case(memory-limit FILE deploy/kubernetes/daemonset.yaml
  FROM [[memory: 256Mi]]
  TO [[memory: 96Mi]]
  SAYS [[container gateway: memory limit 96Mi is less than what ConfigMap pipegated-config data.pipegated.toml lets clients make it hold: max_bytes_in_flight 64M + max_replay_bytes 64M = 128 MiB]])

# ---- Volumes, Secrets, certificates --------------------------------------------------------

deploy_bad_case(mount-names-no-volume FILE deploy/kubernetes/daemonset.yaml
  FROM [[
            - name: tls
              mountPath: /etc/pipegate/tls]]
  TO [[
            - name: certs
              mountPath: /etc/pipegate/tls]]
  SAYS [[deploy/kubernetes/daemonset.yaml: DaemonSet pipegate-gateway: container gateway: volumeMount certs names no volume of the pod (volumes: config, pipes, tls)]])

deploy_bad_case(secret-name FILE deploy/kubernetes/daemonset.yaml
  FROM [[secretName: pipegate-gateway-tls]]
  TO [[secretName: pipegate-gateway-cert]]
  SAYS [[deploy/kubernetes/daemonset.yaml: DaemonSet pipegate-gateway: volume tls: Secret pipegate-gateway-cert is made by no Certificate]])

deploy_bad_case(mounts-the-ca-key FILE deploy/kubernetes/bridge-sidecar.yaml
  FROM [[secretName: pipegate-client-log-reader]]
  TO [[secretName: pipegate-ca]]
  SAYS [[deploy/kubernetes/bridge-sidecar.yaml: Deployment log-consumer: volume client-tls: Secret pipegate-ca is the CA's (Certificate pipegate-ca), with the CA's private key]])

deploy_bad_case(issuer-missing FILE deploy/kubernetes/cert-manager.yaml
  FROM [[
  name: pipegate-selfsigned
  namespace: pipegate]]
  TO [[
  name: pipegate-root
  namespace: pipegate]]
  SAYS [[deploy/kubernetes/cert-manager.yaml: Certificate pipegate-ca: issuerRef names Issuer pipegate-selfsigned, which is not in the tree]])

deploy_bad_case(client-key-path FILE deploy/kubernetes/bridge-sidecar.yaml
  FROM [[value: /etc/pipegate/client/tls.key]]
  TO [[value: /etc/pipegate/client/client.key]]
  SAYS [[container pipegate-mount: PIPEGATE_KEY /etc/pipegate/client/client.key: volume client-tls (Secret pipegate-client-log-reader) at /etc/pipegate/client has no file client.key]])

# ---- Security context ----------------------------------------------------------------------

deploy_bad_case(run-as-other-uid FILE deploy/kubernetes/daemonset.yaml
  FROM [[
        runAsUser: 10001]]
  TO [[
        runAsUser: 1000]]
  SAYS [[container gateway: runAsUser 1000 is not the image's uid 10001 (deploy/container/Dockerfile USER)]])

deploy_bad_case(writable-root-fs FILE deploy/kubernetes/daemonset.yaml
  FROM [[
            runAsNonRoot: true
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true]]
  TO [[
            runAsNonRoot: true
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: false]]
  SAYS [[DaemonSet pipegate-gateway: container gateway: securityContext.readOnlyRootFilesystem must be true]])

# ---- Service and Prometheus ----------------------------------------------------------------

deploy_bad_case(prometheus-port FILE deploy/kubernetes/service.yaml
  FROM [[prometheus.io/port: "9745"]]
  TO [[prometheus.io/port: "9090"]]
  SAYS [[deploy/kubernetes/service.yaml: Service pipegate-gateway: prometheus.io/port 9090 is not the metrics port 9745]])

deploy_bad_case(service-target-port FILE deploy/kubernetes/service.yaml
  FROM [[targetPort: metrics]]
  TO [[targetPort: metric]]
  SAYS [[deploy/kubernetes/service.yaml: Service pipegate-gateway: port metrics targets metric, which no container of DaemonSet pipegate-gateway declares]])

deploy_bad_case(service-selector FILE deploy/kubernetes/service.yaml
  FROM [[
  selector:
    app.kubernetes.io/name: pipegate-gateway]]
  TO [[
  selector:
    app.kubernetes.io/name: pipegate]]
  SAYS [[deploy/kubernetes/service.yaml: Service pipegate-gateway: selector {'app.kubernetes.io/name': 'pipegate'} matches no pod template of the tree]])

# ---- The bridge sidecar reaches an export it may use ----------------------------------------

deploy_bad_case(sidecar-export-name FILE deploy/kubernetes/bridge-sidecar.yaml
  FROM [[svc:7445/node-logs]]
  TO [[svc:7445/node-log]]
  SAYS [[container pipegate-mount: pipe://pipegate-gateway.pipegate.svc:7445/node-log: ConfigMap pipegated-config data.pipegated.toml has no export node-log (exports: node-logs)]])

deploy_bad_case(sidecar-dials-metrics-port FILE deploy/kubernetes/bridge-sidecar.yaml
  FROM [[svc:7445/node-logs]]
  TO [[svc:9745/node-logs]]
  SAYS [[Service pipegate-gateway port 9745 reaches port 9745 of DaemonSet pipegate-gateway, which is not a listen port]])

deploy_bad_case(sidecar-host FILE deploy/kubernetes/bridge-sidecar.yaml
  FROM [[pipe://pipegate-gateway.pipegate.svc:7445]]
  TO [[pipe://pipegate.pipegate.svc:7445]]
  SAYS [[container pipegate-mount: pipe://pipegate.pipegate.svc:7445/node-logs: pipegate.pipegate.svc is no Service of deploy/kubernetes]])

deploy_bad_case(gateway-certificate-name FILE deploy/kubernetes/cert-manager.yaml
  FROM [[
    - pipegate-gateway.pipegate.svc
]]
  TO [[
]]
  SAYS [[the gateway's certificate (Certificate pipegate-gateway) does not name pipegate-gateway.pipegate.svc (it names pipegate-gateway.pipegate.svc.cluster.local)]])

deploy_bad_case(client-not-allowed FILE deploy/kubernetes/cert-manager.yaml
  FROM [[commonName: log-reader]]
  TO [[commonName: log-writer]]
  SAYS [=[export node-logs (ConfigMap pipegated-config data.pipegated.toml) allows ['log-reader'], not Certificate pipegate-client-log-reader's identities ['log-writer']]=])

# ---- Compose -------------------------------------------------------------------------------

deploy_bad_case(compose-missing-config FILE deploy/container/container-gateway.toml REMOVE
  SAYS [[deploy/container/compose.yaml: service gateway: bind mount ./container-gateway.toml does not exist (deploy/container/container-gateway.toml)]])

deploy_bad_case(compose-published-port FILE deploy/container/compose.yaml
  FROM [["127.0.0.1:7446:7445"]]
  TO [["127.0.0.1:7446:7444"]]
  SAYS [[deploy/container/compose.yaml: service gateway: publishes container port 7444, on which deploy/container/container-gateway.toml does not listen]])

deploy_bad_case(compose-healthcheck-port FILE deploy/container/compose.yaml
  FROM [[/dev/tcp/127.0.0.1/9745]]
  TO [[/dev/tcp/127.0.0.1/9746]]
  SAYS [[deploy/container/compose.yaml: service gateway: healthcheck asks port 9746, not the metrics port 9745 of deploy/container/container-gateway.toml]])

deploy_bad_case(compose-undeclared-volume FILE deploy/container/compose.yaml
  FROM [[
volumes:
  pipes:
]]
  TO [[
volumes:
  pipe-dir:
]]
  SAYS [[deploy/container/compose.yaml: service gateway: volume pipes is not declared under volumes:]])

deploy_bad_case(compose-host-export FILE deploy/container/compose.yaml
  FROM [=[command: ["cat", "pipe://host.docker.internal/host-logs"]]=]
  TO [=[command: ["cat", "pipe://host.docker.internal/host-log"]]=]
  SAYS [[deploy/container/compose.yaml: service host-reader: pipe://host.docker.internal/host-log: deploy/container/host-gateway.toml has no export host-log (exports: host-logs)]])

deploy_bad_case(compose-no-host-gateway FILE deploy/container/compose.yaml
  FROM [[
      - "host.docker.internal:host-gateway"
]]
  TO [[
      - "gateway.internal:host-gateway"
]]
  SAYS [[deploy/container/compose.yaml: service host-reader: dials host.docker.internal without extra_hosts "host.docker.internal:host-gateway"]])

deploy_bad_case(compose-pulls-the-image FILE deploy/container/compose.yaml
  FROM [[
    # Built by the `gateway` service, never pulled (a `pipegate` on Docker Hub is not this).
    pull_policy: never
]]
  TO [[
]]
  SAYS [[deploy/container/compose.yaml: service host-reader: pipegate:0.1.0 is built here, not pulled: without build:, it needs pull_policy: never]])

# ---- The real parser: pipegated --check-config ----------------------------------------------

deploy_bad_case(unknown-config-key FILE deploy/kubernetes/configmap.yaml CHECK_CONFIG
  FROM [[watch_certificates = true]]
  TO [[watch_certificate = true]]
  SAYS [[deploy/kubernetes/configmap.yaml: ConfigMap pipegated-config data.pipegated.toml: pipegated --check-config refuses it (exit 1): ]])
