# node-doctor agent image: a static Go binary plus the host tools it still reads
# iptables/nftables state with (both iptables backends and nft).
ARG GO_VERSION=1.26
FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG REVISION=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/node-doctor/node-doctor/pkg/version.Version=${VERSION} -X github.com/node-doctor/node-doctor/pkg/version.Revision=${REVISION}" \
      -o /out/node-doctor ./cmd/agent

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables nftables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/node-doctor /usr/local/bin/node-doctor
USER 0:0
ENTRYPOINT ["/usr/local/bin/node-doctor"]
CMD ["run", "--host-root=/host"]
