package journal

import (
	"bytes"
	"encoding/binary"
	"os/exec"
	"strings"
	"testing"
)

// The journald here writes ZSTD only, so LZ4 and XZ payloads come from the
// real lz4 and xz tools, packed as journald packs them.

func compressWith(t *testing.T, tool string, args []string, in []byte) []byte {
	t.Helper()
	path, err := exec.LookPath(tool)
	if err != nil {
		t.Skipf("no %s here: %v", tool, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	return out
}

// lz4Block takes the one data block out of an LZ4 frame.
func lz4Block(t *testing.T, frame []byte) []byte {
	t.Helper()
	if len(frame) < 7 || binary.LittleEndian.Uint32(frame) != 0x184D2204 {
		t.Fatalf("not an lz4 frame: % x", frame[:min(len(frame), 8)])
	}
	flg := frame[4]
	i := 6 // magic, FLG, BD
	if flg&0x08 != 0 {
		i += 8 // content size
	}
	if flg&0x01 != 0 {
		i += 4 // dictionary ID
	}
	i++ // header checksum
	size := binary.LittleEndian.Uint32(frame[i:])
	if size&0x80000000 != 0 {
		t.Fatal("lz4 stored the block uncompressed")
	}
	return frame[i+4 : i+4+int(size)]
}

func testField() []byte {
	return []byte("MESSAGE=" + strings.Repeat("kernel: oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null) ", 80))
}

func TestDecompressLZ4FromTool(t *testing.T) {
	field := testField()
	block := lz4Block(t, compressWith(t, "lz4", []string{"-c", "-q", "--no-frame-crc", "-BD"}, field))
	payload := binary.LittleEndian.AppendUint64(nil, uint64(len(field)))
	payload = append(payload, block...)
	var d decompressor
	defer d.close()
	got, err := d.decompress(Data{Flags: objectCompressedLZ4, Payload: payload}, DefaultMaxFieldSize, nil)
	if err != nil || !bytes.Equal(got, field) {
		t.Fatalf("lz4: got %d bytes (%v), want %d", len(got), err, len(field))
	}
	if _, err := d.decompress(Data{Flags: objectCompressedLZ4, Payload: payload}, 100, nil); err == nil {
		t.Error("lz4 over the limit: no error")
	}
}

func TestDecompressXZFromTool(t *testing.T) {
	field := testField()
	payload := compressWith(t, "xz", []string{"-c", "--check=crc64"}, field)
	var d decompressor
	defer d.close()
	got, err := d.decompress(Data{Flags: objectCompressedXZ, Payload: payload}, DefaultMaxFieldSize, nil)
	if err != nil || !bytes.Equal(got, field) {
		t.Fatalf("xz: got %d bytes (%v), want %d", len(got), err, len(field))
	}
	if _, err := d.decompress(Data{Flags: objectCompressedXZ, Payload: payload}, 100, nil); err == nil {
		t.Error("xz over the limit: no error")
	}
	if _, err := d.decompress(Data{Flags: objectCompressedXZ, Payload: payload[:len(payload)/2]}, DefaultMaxFieldSize, nil); err == nil {
		t.Error("xz cut in half: no error")
	}
	// A stream asking for a huge dictionary is refused before decoding.
	huge := compressWith(t, "xz", []string{"-c", "--lzma2=preset=1,dict=1536MiB"}, field)
	if dict, err := xzDictSize(huge); err != nil || dict != 1536<<20 {
		t.Fatalf("dictionary size %d, %v", dict, err)
	}
	if _, err := d.decompress(Data{Flags: objectCompressedXZ, Payload: huge}, 1<<20, nil); err == nil || !strings.Contains(err.Error(), "dictionary") {
		t.Errorf("huge dictionary: %v", err)
	}
	if dict, err := xzDictSize(payload); err != nil || dict != 8<<20 {
		t.Errorf("default preset: dictionary size %d, %v; want 8 MiB", dict, err)
	}
}

func TestDecompressZSTDFromTool(t *testing.T) {
	field := testField()
	payload := compressWith(t, "zstd", []string{"-c", "-q"}, field)
	var d decompressor
	defer d.close()
	got, err := d.decompress(Data{Flags: objectCompressedZSTD, Payload: payload}, DefaultMaxFieldSize, nil)
	if err != nil || !bytes.Equal(got, field) {
		t.Fatalf("zstd: got %d bytes (%v), want %d", len(got), err, len(field))
	}
	if _, err := d.decompress(Data{Flags: objectCompressedZSTD, Payload: payload}, 100, nil); err == nil {
		t.Error("zstd over the limit: no error")
	}
}
