# node-doctor agent image: the static Go binary plus the one host tool it
# still runs, for the iptables-legacy backend: iptables-legacy-save and
# ip6tables-legacy-save (xtables-legacy-multi), their extensions and shared
# libraries. The iptables-nft backend and kube-proxy's nftables tables are
# read over netlink, so there is no nft and no iptables-nft-save here:
# dataplane.reader: exec, which runs those, needs an image of your own that
# has them. No shell, no package manager.
#
#   make image                                  # VERSION/REVISION from git
#   docker build --build-arg VERSION=v0.1.0 --build-arg REVISION=$(git rev-parse HEAD) -t node-doctor:v0.1.0 .
#
# deploy/image/rootfs.sh decides what goes in; the e2e harness runs the same
# script on the test machine to build an equivalent image without a registry
# (test/harness/agent_image.go). See docs/deploy.md.
ARG GO_VERSION=1.27.3
ARG DEBIAN_VERSION=bookworm

FROM golang:${GO_VERSION}-${DEBIAN_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG REVISION=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/node-doctor/node-doctor/pkg/version.Version=${VERSION} -X github.com/node-doctor/node-doctor/pkg/version.Revision=${REVISION}" \
      -o /out/node-doctor ./cmd/agent

FROM debian:${DEBIAN_VERSION}-slim AS tools
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables netbase \
 && rm -rf /var/lib/apt/lists/*
COPY deploy/image/rootfs.sh /rootfs.sh
RUN sh /rootfs.sh /rootfs \
 && chroot /rootfs /usr/sbin/iptables-legacy-save --version \
 && chroot /rootfs /usr/sbin/ip6tables-legacy-save --version

FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="node-doctor" \
      org.opencontainers.image.source="https://github.com/node-doctor/node-doctor" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=tools /rootfs/ /
COPY --from=build /out/node-doctor /usr/local/bin/node-doctor
ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Root in the container, with every capability dropped but the few the
# DaemonSet names (see docs/deploy.md for why not a non-root user).
USER 0:0
ENTRYPOINT ["/usr/local/bin/node-doctor"]
CMD ["run", "--host-root=/host"]
