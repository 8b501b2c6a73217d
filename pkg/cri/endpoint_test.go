package cri

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func TestParseCrictlConfigFiles(t *testing.T) {
	tests := []struct {
		file    string
		want    CrictlConfig
		wantErr string
	}{
		{file: "containerd.yaml", want: CrictlConfig{RuntimeEndpoint: "unix:///run/containerd/containerd.sock", ImageEndpoint: "unix:///run/containerd/containerd.sock",
			Timeout: 10 * time.Second, Ignored: []string{"debug", "pull-image-on-create"}}},
		{file: "crio.yaml", want: CrictlConfig{RuntimeEndpoint: "unix:///var/run/crio/crio.sock", Timeout: 2 * time.Second}},
		{file: "empty.yaml", want: CrictlConfig{}},
		{file: "unknown-keys.yaml", want: CrictlConfig{RuntimeEndpoint: "unix:///run/k3s/containerd/containerd.sock", Ignored: []string{"disable-pull-on-run", "some-future-key"}}},
		{file: "bad-timeout.yaml", wantErr: `timeout (line 2): "10s" is not a whole number of seconds`},
		{file: "not-a-mapping.yaml", wantErr: "must be a mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata/crictl", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseCrictlConfig(b)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func FuzzParseCrictlConfig(f *testing.F) {
	files, _ := filepath.Glob("testdata/crictl/*.yaml")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("timeout: -1\n"))
	f.Add([]byte("runtime-endpoint: [a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCrictlConfig(data)
		if err != nil {
			if !reflect.DeepEqual(c, CrictlConfig{}) {
				t.Errorf("error %v with a non-zero config %+v", err, c)
			}
			return
		}
		if c.Timeout < 0 || c.Timeout > time.Hour {
			t.Errorf("timeout %s out of range", c.Timeout)
		}
	})
}

func TestResolveEndpoints(t *testing.T) {
	conf := &fstest.MapFile{Data: []byte("runtime-endpoint: unix:///run/k3s/containerd/containerd.sock\nimage-endpoint: unix:///run/img.sock\ntimeout: 7\n")}
	alt := &fstest.MapFile{Data: []byte("runtime-endpoint: unix:///run/alt.sock\n")}
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	tests := []struct {
		name    string
		o       EndpointOptions
		want    Endpoints
		wantErr string
	}{
		{name: "defaults", o: EndpointOptions{HostFS: fstest.MapFS{}},
			want: Endpoints{Runtime: DefaultRuntimeEndpoints, Source: "default sockets"}},
		{name: "crictl.yaml", o: EndpointOptions{HostFS: fstest.MapFS{"etc/crictl.yaml": conf}},
			want: Endpoints{Runtime: []string{"unix:///run/k3s/containerd/containerd.sock"}, Image: "unix:///run/img.sock", Timeout: 7 * time.Second, Source: "/etc/crictl.yaml", Explicit: true}},
		{name: "CRI_CONFIG_FILE", o: EndpointOptions{HostFS: fstest.MapFS{"etc/crictl.yaml": conf, "opt/alt.yaml": alt}, Getenv: env(EnvConfigFile, "/opt/alt.yaml")},
			want: Endpoints{Runtime: []string{"unix:///run/alt.sock"}, Source: "/opt/alt.yaml", Explicit: true}},
		{name: "env beats file", o: EndpointOptions{HostFS: fstest.MapFS{"etc/crictl.yaml": conf}, Getenv: env(EnvRuntimeEndpoint, "unix:///run/env.sock", EnvImageEndpoint, "unix:///run/envimg.sock")},
			want: Endpoints{Runtime: []string{"unix:///run/env.sock"}, Image: "unix:///run/envimg.sock", Timeout: 7 * time.Second, Source: "$CONTAINER_RUNTIME_ENDPOINT", Explicit: true}},
		{name: "flag beats env", o: EndpointOptions{RuntimeEndpoint: "/run/flag.sock", HostFS: fstest.MapFS{"etc/crictl.yaml": conf}, Getenv: env(EnvRuntimeEndpoint, "unix:///run/env.sock")},
			want: Endpoints{Runtime: []string{"/run/flag.sock"}, Image: "unix:///run/img.sock", Timeout: 7 * time.Second, Source: "--runtime-endpoint", Explicit: true}},
		{name: "tcp refused", o: EndpointOptions{RuntimeEndpoint: "tcp://10.0.0.1:1234"}, wantErr: "only unix:// sockets"},
		{name: "relative refused", o: EndpointOptions{RuntimeEndpoint: "unix://run/x.sock"}, wantErr: "want unix:///absolute"},
		{name: "broken crictl.yaml", o: EndpointOptions{HostFS: fstest.MapFS{"etc/crictl.yaml": {Data: []byte("timeout: soon\n")}}}, wantErr: "/etc/crictl.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ResolveEndpoints(tt.o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestSocketPath(t *testing.T) {
	for in, want := range map[string]string{
		"unix:///run/containerd/containerd.sock": "run/containerd/containerd.sock",
		"/var/run/crio/crio.sock":                "var/run/crio/crio.sock",
		"unix:///run/../run/x.sock":              "run/x.sock",
	} {
		if got, err := SocketPath(in); err != nil || got != want {
			t.Errorf("SocketPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
