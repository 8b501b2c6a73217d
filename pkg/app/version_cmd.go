package app

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/node-doctor/node-doctor/pkg/version"
)

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print node-doctor's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, rev := version.Get()
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "node-doctor %s (revision %s, %s, %s/%s)\n", v, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}
