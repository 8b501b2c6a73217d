package cri

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// Bounds of a log excerpt, as kubelet's FallbackToLogsOnError uses for a
// termination message: the last 80 lines or 2 KiB, whichever is smaller.
const (
	LogTailLines = 80
	LogTailBytes = 2048
	// logReadWindow is how much of the end of the file is read: enough raw
	// CRI lines (each with a ~40-byte prefix) to fill LogTailBytes.
	logReadWindow = 16 << 10
)

// TailLog returns the last lines a container wrote, bounded by maxLines and
// maxBytes, from its CRI log file at logPath (absolute on the node, read
// under the host root). Only the end of the file is read.
func TailLog(fsys fs.FS, logPath string, maxLines, maxBytes int) (string, error) {
	if logPath == "" {
		return "", errors.New("cri: container has no log path")
	}
	f, err := fsys.Open(hostPath(logPath))
	if err != nil {
		return "", fmt.Errorf("cri: open container log: %w", err)
	}
	defer f.Close()
	var data []byte
	fi, err := f.Stat()
	seeker, ok := f.(io.Seeker)
	if err == nil && ok && fi.Size() > logReadWindow {
		if _, err := seeker.Seek(fi.Size()-logReadWindow, io.SeekStart); err != nil {
			return "", fmt.Errorf("cri: seek container log: %w", err)
		}
		data, err = io.ReadAll(io.LimitReader(f, logReadWindow))
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:] // started mid-line
		}
	} else {
		// Without Seek, keep only the end while streaming.
		data, err = readTail(f, logReadWindow)
	}
	if err != nil {
		return "", fmt.Errorf("cri: read container log: %w", err)
	}
	return BoundLines(ParseCRILog(data), maxLines, maxBytes), nil
}

func readTail(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, 0, 2*n)
	chunk := make([]byte, 32<<10)
	for {
		k, err := r.Read(chunk)
		buf = append(buf, chunk[:k]...)
		if len(buf) > n {
			buf = append(buf[:0], buf[len(buf)-n:]...)
		}
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// ParseCRILog turns CRI log file content ("<time> <stream> <P|F> <text>"
// per line, partial lines joined) into the lines the container wrote.
// Docker json-file lines (cri-dockerd) are understood too; anything else is
// kept as is.
func ParseCRILog(data []byte) []string {
	var out []string
	var partial strings.Builder
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if len(line) == 0 {
			continue
		}
		if line[0] == '{' {
			var j struct{ Log string }
			if json.Unmarshal(line, &j) == nil {
				out = append(out, strings.Split(strings.TrimSuffix(j.Log, "\n"), "\n")...)
				continue
			}
		}
		text, full, ok := parseCRILine(line)
		if !ok {
			out = append(out, string(line))
			continue
		}
		partial.Write(text)
		if full {
			out = append(out, partial.String())
			partial.Reset()
		}
	}
	if partial.Len() > 0 {
		out = append(out, partial.String())
	}
	return out
}

// parseCRILine splits "2016-10-06T00:17:09.669794202Z stdout F text".
func parseCRILine(line []byte) (text []byte, full, ok bool) {
	f := bytes.SplitN(line, []byte{' '}, 4)
	if len(f) < 3 || len(f[2]) == 0 || len(f[0]) < len("2006-01-02T15:04:05Z") || f[0][4] != '-' {
		return nil, false, false
	}
	if s := string(f[1]); s != "stdout" && s != "stderr" {
		return nil, false, false
	}
	if len(f) == 4 {
		text = f[3]
	}
	// The tag is P or F, possibly with more ':'-separated tags after it.
	return text, f[2][0] != 'P', true
}

// BoundLines joins the last lines, at most maxLines of them and at most
// maxBytes in all (the first kept line may be cut from the left).
func BoundLines(lines []string, maxLines, maxBytes int) string {
	for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	s := strings.Join(lines, "\n")
	if len(s) > maxBytes {
		s = strings.ToValidUTF8(s[len(s)-maxBytes:], "")
	}
	return s
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	s = strings.TrimRight(s, "\n ")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
