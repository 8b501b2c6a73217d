package cri

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"testing/fstest"
	"unicode/utf8"
)

func TestParseCRILog(t *testing.T) {
	in := "2026-11-23T12:00:00.000000001Z stdout F hello\n" +
		"2026-11-23T12:00:00.000000002Z stderr P part one, \n" +
		"2026-11-23T12:00:00.000000003Z stderr F part two\n" +
		"2026-11-23T12:00:00.000000004Z stdout F \n" +
		`{"log":"docker json line\n","stream":"stderr","time":"2026-11-23T12:00:00Z"}` + "\n" +
		"not a cri line\n" +
		"2026-11-23T12:00:00.000000005Z stdout P dangling"
	got := ParseCRILog([]byte(in))
	want := []string{"hello", "part one, part two", "", "docker json line", "not a cri line", "dangling"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func FuzzParseCRILog(f *testing.F) {
	f.Add([]byte("2026-11-23T12:00:00.000000001Z stdout F hello\n"))
	f.Add([]byte("2026-11-23T12:00:00.000000002Z stderr P a\n2026-11-23T12:00:00Z stderr F:x b\n"))
	f.Add([]byte(`{"log":"x\ny\n"}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		lines := ParseCRILog(data)
		s := BoundLines(lines, LogTailLines, LogTailBytes)
		if len(s) > LogTailBytes || strings.Count(s, "\n") >= LogTailLines {
			t.Errorf("bounds broken: %d bytes, %d lines", len(s), strings.Count(s, "\n")+1)
		}
	})
}

func TestTailLogBounds(t *testing.T) {
	var b strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&b, "2026-11-23T12:00:00.%09dZ stderr F line %d\n", i, i)
	}
	fsys := fstest.MapFS{"var/log/pods/ns_p_uid/c/0.log": {Data: []byte(b.String())}}
	got, err := TailLog(fsys, "/var/log/pods/ns_p_uid/c/0.log", LogTailLines, LogTailBytes)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(got, "\n")
	if len(lines) != 80 || lines[79] != "line 4999" || lines[0] != "line 4920" {
		t.Errorf("want the last 80 lines, got %d: first %q last %q", len(lines), lines[0], lines[len(lines)-1])
	}
	long := strings.Repeat("é", 3000) // 6000 bytes in one line
	fsys["l"] = &fstest.MapFile{Data: []byte("2026-11-23T12:00:00Z stdout F " + long + "\n")}
	got, err = TailLog(fsys, "/l", LogTailLines, LogTailBytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) > LogTailBytes || !utf8.ValidString(got) || !strings.HasSuffix(long, got) {
		t.Errorf("2 KiB bound: %d bytes, valid utf8 %v", len(got), utf8.ValidString(got))
	}
	if _, err := TailLog(fsys, "/missing", 80, 2048); err == nil {
		t.Error("missing log: no error")
	}
}

func TestSandboxImageAndCNIDirsFromInfo(t *testing.T) {
	info := map[string]string{
		"config":    `{"containerd":{"snapshotter":"overlayfs"},"cni":{"binDir":"/usr/lib/cni","confDir":"/etc/cni/net.d"},"sandboxImage":"registry.k8s.io/pause:3.6"}`,
		"cniconfig": `{"PluginDirs":["/usr/lib/cni"],"PluginConfDir":"/etc/cni/net.d"}`,
		"golang":    `"go1.19"`,
		"broken":    `{`,
	}
	if got := SandboxImageFromInfo(info); got != "registry.k8s.io/pause:3.6" {
		t.Errorf("containerd 1.x sandbox image: %q", got)
	}
	if got := SandboxImageFromInfo(map[string]string{"config": `{"pinnedImages":{"sandbox":"registry.k8s.io/pause:3.10"}}`}); got != "registry.k8s.io/pause:3.10" {
		t.Errorf("containerd 2.x sandbox image: %q", got)
	}
	if got := SandboxImageFromInfo(map[string]string{"info": `{"pause_image":"quay.io/crio/pause:latest"}`}); got != "quay.io/crio/pause:latest" {
		t.Errorf("CRI-O pause image: %q", got)
	}
	if got := SandboxImageFromInfo(nil); got != "" {
		t.Errorf("no info: %q", got)
	}
	conf, bin := CNIDirsFromInfo(info)
	if conf != "/etc/cni/net.d" || bin != "/usr/lib/cni" {
		t.Errorf("cni dirs %q %q", conf, bin)
	}
}

// Fixtures captured from the e2e run against Debian's containerd 1.6.20
// (ND_CRI_CAPTURE=dir go test -tags e2e -run CriRealContainerd ./test/e2e/).
func TestCapturedContainerd16(t *testing.T) {
	b, err := os.ReadFile("testdata/containerd-1.6-status-info.json")
	if err != nil {
		t.Fatal(err)
	}
	var info map[string]string
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatal(err)
	}
	if got := SandboxImageFromInfo(info); got != "localhost/node-doctor/pause:e2e" {
		t.Errorf("sandbox image %q", got)
	}
	conf, bin := CNIDirsFromInfo(info)
	if !strings.HasSuffix(conf, "/containerd/net.d") || bin != "/usr/lib/cni" {
		t.Errorf("cni dirs %q %q", conf, bin)
	}
	got, err := TailLog(os.DirFS("testdata"), "/containerd-1.6-crash.log", LogTailLines, LogTailBytes)
	if err != nil || got != "sleep: invalid number 'a'" {
		t.Errorf("crash log tail %q, %v", got, err)
	}
}
