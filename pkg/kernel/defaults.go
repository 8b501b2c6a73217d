package kernel

import (
	_ "embed"
)

//go:embed default_rules.yaml
var defaultRulesYAML []byte

// DefaultRulesFile names the built-in rules in messages.
const DefaultRulesFile = "built-in default_rules.yaml"

// DefaultRules compiles the built-in rules for modern kernels.
func DefaultRules() (*RuleSet, error) { return ParseRules(DefaultRulesFile, defaultRulesYAML) }
