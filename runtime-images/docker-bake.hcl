# Builds every image of K8sInterpreter: the API and one sandbox image per language
# group (app/backends/kubernetes/templates.py IMAGE_GROUPS).
#
#   cd <repository root>
#   docker buildx bake -f runtime-images/docker-bake.hcl                 # build all
#   REGISTRY=registry.example.com/k8si TAG=0.1.0 \
#     docker buildx bake -f runtime-images/docker-bake.hcl --push        # build + push
#   docker buildx bake -f runtime-images/docker-bake.hcl --print         # show the plan
#
# Paths below are relative to the directory bake is run from: run it from the
# repository root (runtime-images/build.sh does).
#
# Names: ${REGISTRY}/runtime-<group>:${TAG} and ${REGISTRY}/api:${TAG}. With the
# defaults these are exactly the names the Kubernetes backend uses
# (KubernetesSettings.image_template = ghcr.io/k8sinterpreter/runtime-{group}:0.1.0).
# Pushing elsewhere? Set K8S_IMAGE_TEMPLATE in the API's ConfigMap and an `images:`
# entry in your kustomize overlay to the same names (see kustomize/README.md).
#
# Base images are pinned to exact versions. To pin by digest as well, override a
# base variable with "name:tag@sha256:<digest>" (docker buildx imagetools inspect
# name:tag shows the digest), e.g. PYTHON_BASE=python:3.11.11-slim-bookworm@sha256:...

variable "REGISTRY" {
  default = "ghcr.io/k8sinterpreter"
}

variable "TAG" {
  default = "0.1.0"
}

variable "PLATFORMS" {
  default = "linux/amd64"
}

variable "PYTHON_BASE" {
  default = "python:3.11.11-slim-bookworm"
}

variable "NODE_BASE" {
  default = "node:22.12.0-bookworm-slim"
}

variable "DEBIAN_BASE" {
  default = "debian:12.8-slim"
}

variable "PHP_BASE" {
  default = "php:8.3.14-cli-bookworm"
}

variable "RUST_BASE" {
  default = "rust:1.83.0-slim-bookworm"
}

variable "GO_BASE" {
  default = "golang:1.23.4-bookworm"
}

group "default" {
  targets = ["api", "runtimes"]
}

group "runtimes" {
  targets = ["runtime-python", "runtime-node", "runtime-native", "runtime-java",
             "runtime-php", "runtime-rust", "runtime-go", "runtime-r"]
}

# Shared by the sandbox images: a small context (runtime-images/) plus the executor
# as the named context "sidecar" (COPY --from=sidecar in each Dockerfile).
target "_runtime" {
  context   = "runtime-images"
  contexts  = { sidecar = "sidecar" }
  platforms = split(",", PLATFORMS)
  labels    = { "org.opencontainers.image.version" = TAG }
}

target "api" {
  context    = "."
  dockerfile = "runtime-images/api/Dockerfile"
  args       = { BASE_IMAGE = PYTHON_BASE }
  platforms  = split(",", PLATFORMS)
  tags       = ["${REGISTRY}/api:${TAG}"]
}

target "runtime-python" {
  inherits   = ["_runtime"]
  dockerfile = "python/Dockerfile"
  args       = { BASE_IMAGE = PYTHON_BASE }
  tags       = ["${REGISTRY}/runtime-python:${TAG}"]
}

target "runtime-node" {
  inherits   = ["_runtime"]
  dockerfile = "node/Dockerfile"
  args       = { BASE_IMAGE = NODE_BASE }
  tags       = ["${REGISTRY}/runtime-node:${TAG}"]
}

target "runtime-native" {
  inherits   = ["_runtime"]
  dockerfile = "native/Dockerfile"
  args       = { BASE_IMAGE = DEBIAN_BASE }
  tags       = ["${REGISTRY}/runtime-native:${TAG}"]
}

target "runtime-java" {
  inherits   = ["_runtime"]
  dockerfile = "java/Dockerfile"
  args       = { BASE_IMAGE = DEBIAN_BASE }
  tags       = ["${REGISTRY}/runtime-java:${TAG}"]
}

target "runtime-php" {
  inherits   = ["_runtime"]
  dockerfile = "php/Dockerfile"
  args       = { BASE_IMAGE = PHP_BASE }
  tags       = ["${REGISTRY}/runtime-php:${TAG}"]
}

target "runtime-rust" {
  inherits   = ["_runtime"]
  dockerfile = "rust/Dockerfile"
  args       = { BASE_IMAGE = RUST_BASE }
  tags       = ["${REGISTRY}/runtime-rust:${TAG}"]
}

target "runtime-go" {
  inherits   = ["_runtime"]
  dockerfile = "go/Dockerfile"
  args       = { BASE_IMAGE = GO_BASE }
  tags       = ["${REGISTRY}/runtime-go:${TAG}"]
}

target "runtime-r" {
  inherits   = ["_runtime"]
  dockerfile = "r/Dockerfile"
  args       = { BASE_IMAGE = DEBIAN_BASE }
  tags       = ["${REGISTRY}/runtime-r:${TAG}"]
}
