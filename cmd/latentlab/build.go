package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/latentworker/latentworker/lab"
	"github.com/latentworker/latentworker/lab/master"
)

func newBuild(o *lab.Options) *cobra.Command {
	var builder, worker string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Force a build on the lab master, wait for it and print its steps with their times",
		Long: `build forces a build on one of the lab master's builders (lab-builder, the
trivial one, or cpython: the lab's CPython repository, configure
--with-pydebug, make, the optional modules, pythoninfo and the short test
run), waits until it ends and prints each step with its result and time,
then the total, on stdout. With --worker it first waits until that worker is
connected.

Exit codes: 0 the build succeeded, 1 it failed (the failing step's output
ends on stderr), 2 bad input.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, ok := lab.Running(*o)
			if !ok {
				return lab.ErrNotUp
			}
			if st.MasterURL == "" {
				return usageError{fmt.Errorf("the lab runs no master")}
			}
			ctx := cmd.Context()
			c := &master.Client{BaseURL: st.MasterURL}
			if worker != "" {
				if err := c.WaitWorkerConnected(ctx, worker, 5*time.Minute); err != nil {
					return err
				}
			}
			req, err := c.ForceBuild(ctx, master.DefaultSchedulerName, builder, "latentlab build")
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "latentlab: build request %d on %s; waiting (at most %s)\n", req, builder, timeout)
			b, err := c.WaitBuild(ctx, req, timeout)
			if err != nil {
				return err
			}
			steps, err := c.Steps(ctx, b.BuildID)
			if err != nil {
				return err
			}
			var total time.Duration
			for _, s := range steps {
				res := "running"
				if s.Results != nil {
					res = master.ResultString(*s.Results)
				}
				fmt.Printf("%-20s %-9s %6s\n", s.Name, res, s.Duration())
				total += s.Duration()
			}
			fmt.Printf("%-20s %-9s %6s\n", "total", master.ResultString(b.Results), total)
			if !b.Succeeded() {
				for _, s := range steps {
					if s.Results != nil && *s.Results != master.Success && *s.Results != master.Warnings {
						out, _ := c.StepOutput(ctx, b.BuildID, s.Name)
						lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
						fmt.Fprintf(os.Stderr, "--- step %s, the end of its output:\n%s\n", s.Name, strings.Join(lines[max(0, len(lines)-40):], "\n"))
					}
				}
				return fmt.Errorf("build %d on %s: %s", b.Number, builder, master.ResultString(b.Results))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&builder, "builder", master.DefaultBuilderName, "the builder: "+master.DefaultBuilderName+" or "+master.CPythonBuilderName)
	cmd.Flags().StringVar(&worker, "worker", "", "wait until this worker is connected first")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Hour, "how long to wait for the build")
	return cmd
}
