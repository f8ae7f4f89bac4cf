package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

func init() { register(newConfigCommand) }

// clientConfig is the client's config file: named contexts, each a server
// and how to authenticate to it, like a kubeconfig.
type clientConfig struct {
	CurrentContext string          `json:"current-context,omitempty"`
	Contexts       []clientContext `json:"contexts"`
}

type clientContext struct {
	Name                  string `json:"name"`
	Server                string `json:"server"`
	CertificateAuthority  string `json:"certificate-authority,omitempty"`
	TokenFile             string `json:"token-file,omitempty"`
	ClientCertificate     string `json:"client-certificate,omitempty"`
	ClientKey             string `json:"client-key,omitempty"`
	InsecureSkipTLSVerify bool   `json:"insecure-skip-tls-verify,omitempty"`
}

// configPath is $CKPT_CONFIG, or ~/.config/ckpt/config.yaml.
func configPath() string {
	if p := os.Getenv("CKPT_CONFIG"); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "ckpt", "config.yaml")
}

// loadConfig reads the config file; a missing file is an empty config.
func loadConfig() (*clientConfig, error) {
	cfg := &clientConfig{}
	p := configPath()
	if p == "" {
		return cfg, nil
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return nil, fmt.Errorf("client config: %w", err)
	}
	if err := yaml.UnmarshalStrict(b, cfg); err != nil {
		return nil, fmt.Errorf("client config %s: %w", p, err)
	}
	// Relative file names are relative to the config file.
	base := filepath.Dir(p)
	for i := range cfg.Contexts {
		k := &cfg.Contexts[i]
		for _, f := range []*string{&k.CertificateAuthority, &k.TokenFile, &k.ClientCertificate, &k.ClientKey} {
			if *f != "" && !filepath.IsAbs(*f) {
				*f = filepath.Join(base, *f)
			}
		}
	}
	return cfg, nil
}

func (c *clientConfig) find(name string) (clientContext, bool) {
	i := slices.IndexFunc(c.Contexts, func(k clientContext) bool { return k.Name == name })
	if i < 0 {
		return clientContext{}, false
	}
	return c.Contexts[i], true
}

// save writes the config (0600, directory 0700) atomically.
func (c *clientConfig) save() error {
	p := configPath()
	if p == "" {
		return errors.New("client config: no home directory; set $CKPT_CONFIG")
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("client config: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".config-*.yaml")
	if err != nil {
		return fmt.Errorf("client config: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("client config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("client config: %w", err)
	}
	return os.Rename(tmp.Name(), p)
}

// fillFrom sets the options the user did not give from a context.
func (o *clientOptions) fillFrom(k clientContext) {
	set := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	set(&o.server, k.Server)
	if o.token == "" {
		set(&o.tokenFile, k.TokenFile)
	}
	set(&o.caFile, k.CertificateAuthority)
	if o.certFile == "" && o.keyFile == "" {
		o.certFile, o.keyFile = k.ClientCertificate, k.ClientKey
	}
	o.insecure = o.insecure || k.InsecureSkipTLSVerify
}

func newConfigCommand(*globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Manage the client config: named contexts (server and credentials), like a kubeconfig",
		Long: "The client config is $CKPT_CONFIG or ~/.config/ckpt/config.yaml. A context names a server and\n" +
			"its credentials; `--context NAME` on any client command uses it, and without --server or\n" +
			"--context the current context is used (then the local socket, as root on the node).",
		Args: cobra.NoArgs,
	}
	var k clientContext
	set := &cobra.Command{
		Use:   "set-context NAME --server URL [--cacert FILE] [--token-file FILE] [--cert FILE --key FILE]",
		Short: "Add or replace a context",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k.Name = args[0]
			if k.Server == "" {
				return errors.New("--server is required")
			}
			if (k.ClientCertificate == "") != (k.ClientKey == "") {
				return errors.New("--cert and --key must be given together")
			}
			for _, f := range []*string{&k.CertificateAuthority, &k.TokenFile, &k.ClientCertificate, &k.ClientKey} {
				if *f != "" {
					abs, err := filepath.Abs(*f)
					if err != nil {
						return err
					}
					*f = abs
				}
			}
			cfg, err := loadConfig()
			if err != nil {
				return err
			}
			if i := slices.IndexFunc(cfg.Contexts, func(c clientContext) bool { return c.Name == k.Name }); i >= 0 {
				cfg.Contexts[i] = k
			} else {
				cfg.Contexts = append(cfg.Contexts, k)
			}
			if cfg.CurrentContext == "" {
				cfg.CurrentContext = k.Name
			}
			if err := cfg.save(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "context %q set in %s\n", k.Name, configPath())
			return nil
		},
	}
	f := set.Flags()
	f.StringVar(&k.Server, "server", "", "server URL")
	f.StringVar(&k.CertificateAuthority, "cacert", "", "PEM CA bundle to verify the server")
	f.StringVar(&k.TokenFile, "token-file", "", "file holding the bearer token")
	f.StringVar(&k.ClientCertificate, "cert", "", "client certificate (PEM)")
	f.StringVar(&k.ClientKey, "key", "", "private key (PEM) for --cert")
	f.BoolVar(&k.InsecureSkipTLSVerify, "insecure-skip-tls-verify", false, "do not verify the server's certificate (unsafe)")

	use := &cobra.Command{
		Use:   "use-context NAME",
		Short: "Make a context the current one (\"\" for none: the local socket)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig()
			if err != nil {
				return err
			}
			if _, ok := cfg.find(args[0]); !ok && args[0] != "" {
				return fmt.Errorf("no context %q in %s", args[0], configPath())
			}
			cfg.CurrentContext = args[0]
			if err := cfg.save(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "current context: %q\n", args[0])
			return nil
		},
	}
	var out outputFormat
	get := &cobra.Command{
		Use:   "get-contexts",
		Short: "List the contexts (* marks the current one)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig()
			if err != nil {
				return err
			}
			if done, err := out.structured(cmd.OutOrStdout(), cfg); done {
				return err
			}
			tw := table(cmd.OutOrStdout())
			fmt.Fprintln(tw, "CURRENT\tNAME\tSERVER\tAUTH")
			for _, k := range cfg.Contexts {
				cur := ""
				if k.Name == cfg.CurrentContext {
					cur = "*"
				}
				how := "none"
				switch {
				case k.ClientCertificate != "":
					how = "client certificate"
				case k.TokenFile != "":
					how = "token file"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cur, k.Name, k.Server, how)
			}
			return tw.Flush()
		},
	}
	get.Flags().VarP(&out, "output", "o", "output format: json or yaml")
	cmd.AddCommand(set, use, get)
	return cmd
}
