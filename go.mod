module github.com/fsd-launcher/fsd-launcher

go 1.26.8

require (
	github.com/BurntSushi/toml v1.6.0 // indirect
	github.com/elastic/go-seccomp-bpf v1.6.0 // indirect
	github.com/hugelgupf/p9 v0.3.0 // indirect
	github.com/moby/sys/capability v0.5.0 // indirect
	github.com/opencontainers/runtime-spec v1.3.0 // indirect
	github.com/opentracing/opentracing-go v1.2.0 // indirect
	github.com/pkg/errors v0.9.1 // indirect
	github.com/sirupsen/logrus v1.10.2 // indirect
	github.com/u-root/uio v0.0.0-20230305220412-3e8cd9d6bf63 // indirect
	golang.org/x/net v0.41.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
