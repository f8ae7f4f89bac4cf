package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"

	"github.com/spf13/cobra"

	"github.com/ckpt-dev/ckpt/internal/inspect"
)

func init() {
	register(newMemsearchCommand)
	register(newMemdumpCommand)
}

func newMemsearchCommand(g *globalOptions) *cobra.Command {
	var (
		rf       readFlags
		literal  string
		pattern  string
		context  int
		pid      uint32
		maxHits  int
		asJSON   bool
		errFound = errors.New("no match")
	)
	cmd := &cobra.Command{
		Use:   "memsearch ARCHIVE|IMAGE (--search STR | --search-regex RE) [--context N] [--pid P]",
		Short: "Search the memory pages of a checkpoint",
		Long: "Search the dumped memory of every process (or one) while the archive streams by, and\n" +
			"print the process, the virtual address and the bytes around each hit. Bytes that are\n" +
			"not printable ASCII are shown as '.'. Exits 1 when nothing is found.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			so := inspect.SearchOptions{Literal: literal, Context: context, PID: pid, Max: maxHits}
			if (literal == "") == (pattern == "") {
				return fmt.Errorf("give exactly one of --search or --search-regex")
			}
			if pattern != "" {
				re, err := regexp.Compile(pattern)
				if err != nil {
					return fmt.Errorf("--search-regex: %w", err)
				}
				so.Regex = re
			}
			opts, err := rf.options()
			if err != nil {
				return err
			}
			done := withProgress(&opts)
			path, cleanup, err := archivePath(cmd.Context(), g, args[0], rf.tempDir)
			if err != nil {
				return err
			}
			defer cleanup()
			_, res, err := inspect.Search(path, opts, so)
			done()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				e := json.NewEncoder(out)
				e.SetIndent("", "  ")
				if err := e.Encode(res); err != nil {
					return err
				}
			} else {
				printMatches(out, res)
			}
			if len(res.Matches) == 0 {
				return errFound
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&literal, "search", "s", "", "string to search for")
	f.StringVarP(&pattern, "search-regex", "r", "", "regular expression (Go syntax) to search for")
	f.IntVarP(&context, "context", "c", 16, fmt.Sprintf("bytes of context to show around each hit (at most %d)", inspect.MaxContext))
	f.Uint32VarP(&pid, "pid", "p", 0, "search only this process")
	f.IntVar(&maxHits, "max", inspect.DefaultMaxMatches, "stop after this many hits")
	f.BoolVar(&asJSON, "json", false, "print the hits as JSON")
	rf.add(cmd)
	return cmd
}

func printMatches(w io.Writer, res *inspect.SearchResult) {
	if len(res.Matches) == 0 {
		fmt.Fprintf(w, "no match in %s of memory\n", humanBytes(res.Searched))
		return
	}
	tw := table(w)
	fmt.Fprintln(tw, "PID\tCOMMAND\tADDRESS\tCONTEXT")
	for _, m := range res.Matches {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s[%s]%s\n", m.PID, m.Command, m.Address, m.Before, m.Match, m.After)
	}
	tw.Flush()
	if res.Truncated {
		fmt.Fprintf(w, "stopped after %d hits (--max)\n", len(res.Matches))
	}
}

func newMemdumpCommand(g *globalOptions) *cobra.Command {
	var (
		rf     readFlags
		pid    uint32
		output string
		format string
	)
	cmd := &cobra.Command{
		Use:   "memdump ARCHIVE|IMAGE --pid P -o FILE",
		Short: "Write out the dumped memory of one process",
		Long: "Write the memory pages of one process as a hexdump with virtual addresses (--format hex)\n" +
			"or as raw bytes in address order (--format raw; the regions and their offsets in FILE are\n" +
			"printed). FILE is created with mode 0600 and must not exist; it holds secrets.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			if pid == 0 || output == "" {
				return fmt.Errorf("--pid and -o are required")
			}
			opts, err := rf.options()
			if err != nil {
				return err
			}
			done := withProgress(&opts)
			var w io.Writer = cmd.OutOrStdout()
			if output != "-" {
				f, err := os.OpenFile(output, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
				if err != nil {
					return fmt.Errorf("memdump: %w", err)
				}
				defer func() {
					if cerr := f.Close(); err == nil {
						err = cerr
					}
					if err != nil {
						os.Remove(output)
					}
				}()
				w = f
			}
			path, cleanup, err := archivePath(cmd.Context(), g, args[0], rf.tempDir)
			if err != nil {
				return err
			}
			defer cleanup()
			_, regions, err := inspect.Dump(path, opts, pid, inspect.DumpFormat(format), w)
			done()
			if err != nil {
				return err
			}
			if output == "-" {
				return nil
			}
			var total int64
			for _, r := range regions {
				total += r.Size
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s of memory of PID %d to %s\n", humanBytes(total), pid, output)
			if format == string(inspect.DumpRaw) {
				tw := table(cmd.OutOrStdout())
				fmt.Fprintln(tw, "ADDRESS\tSIZE\tOFFSET")
				for _, r := range regions {
					fmt.Fprintf(tw, "%s\t%d\t%d\n", r.Address, r.Size, r.Offset)
				}
				tw.Flush()
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.Uint32VarP(&pid, "pid", "p", 0, "process whose memory to write")
	f.StringVarP(&output, "output", "o", "", "file to write (\"-\" for stdout)")
	f.StringVar(&format, "format", "hex", "hex or raw")
	rf.add(cmd)
	return cmd
}
