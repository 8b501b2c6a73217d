package cri

import (
	"fmt"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
)

// CrictlConfig is what node-doctor uses of crictl's config file
// (/etc/crictl.yaml or $CRI_CONFIG_FILE).
type CrictlConfig struct {
	RuntimeEndpoint string
	ImageEndpoint   string
	// Timeout is the per-call timeout; zero when unset.
	Timeout time.Duration
	// Ignored lists keys crictl knows but node-doctor has no use for, and
	// unknown keys, which crictl also ignores.
	Ignored []string
}

// ParseCrictlConfig parses a crictl config file. Like crictl it accepts an
// empty file, ignores keys it does not know, and reads timeout as whole
// seconds.
func ParseCrictlConfig(data []byte) (CrictlConfig, error) {
	var c CrictlConfig
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return c, fmt.Errorf("crictl config: %w", err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return c, nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return c, nil
	}
	if root.Kind != yaml.MappingNode {
		return c, fmt.Errorf("crictl config: line %d: must be a mapping of keys to values", root.Line)
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		scalar := func() (string, error) {
			if v.Kind != yaml.ScalarNode {
				return "", fmt.Errorf("crictl config: %s (line %d): must be a scalar", k.Value, v.Line)
			}
			if v.Tag == "!!null" {
				return "", nil
			}
			return v.Value, nil
		}
		var err error
		switch k.Value {
		case "runtime-endpoint":
			c.RuntimeEndpoint, err = scalar()
		case "image-endpoint":
			c.ImageEndpoint, err = scalar()
		case "timeout":
			var s string
			if s, err = scalar(); err == nil && s != "" {
				var n int
				n, err = strconv.Atoi(s)
				switch {
				case err != nil:
					err = fmt.Errorf("crictl config: timeout (line %d): %q is not a whole number of seconds", v.Line, s)
				case n < 0 || n > 3600:
					err = fmt.Errorf("crictl config: timeout (line %d): %d is not between 0 and 3600 seconds", v.Line, n)
				default:
					c.Timeout = time.Duration(n) * time.Second
				}
			}
		default:
			c.Ignored = append(c.Ignored, k.Value)
		}
		if err != nil {
			return CrictlConfig{}, err
		}
	}
	return c, nil
}
