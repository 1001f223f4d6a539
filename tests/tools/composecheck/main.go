// composecheck loads a Compose file the way `docker compose` does (compose-go v2:
// the Compose Specification's JSON schema, interpolation, normalization and the
// consistency checks) and fails on any error or warning.
//
//	composecheck [-env-file FILE] [-profile P]... docker-compose.yml
//
// On success it prints the canonical project model as JSON on stdout, so callers
// can make further checks on what Compose itself resolved (environment, images,
// health checks, dependencies). Exit status: 0 valid, 1 invalid, 2 usage.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/sirupsen/logrus"
)

// warnings collects everything compose-go logs at warning level or above
// (an unset variable, the obsolete `version` key, ...): in strict mode each is an error.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}
}

func (w *warnings) Fire(e *logrus.Entry) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, e.Message)
	return nil
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	var profiles multi
	envFile := flag.String("env-file", "", "an env file to interpolate from (default: none; the OS environment is not used)")
	lenient := flag.Bool("allow-warnings", false, "do not fail on compose-go warnings")
	flag.Var(&profiles, "profile", "profile to enable (repeatable; default: all profiles)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: composecheck [-env-file FILE] [-profile P]... COMPOSE_FILE")
		os.Exit(2)
	}
	file, err := filepath.Abs(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if len(profiles) == 0 {
		profiles = multi{"*"}
	}

	hook := &warnings{}
	logrus.AddHook(hook)
	logrus.SetOutput(os.Stderr)

	fns := []cli.ProjectOptionsFn{
		cli.WithWorkingDirectory(filepath.Dir(file)),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
		cli.WithProfiles(profiles),
	}
	if *envFile != "" {
		fns = append(fns, cli.WithEnvFiles(*envFile), cli.WithDotEnv)
	}
	opts, err := cli.NewProjectOptions([]string{file}, fns...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "composecheck:", err)
		os.Exit(1)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "composecheck: invalid:", err)
		os.Exit(1)
	}
	if len(hook.msgs) > 0 && !*lenient {
		for _, m := range hook.msgs {
			fmt.Fprintln(os.Stderr, "composecheck: warning treated as error:", m)
		}
		os.Exit(1)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fmt.Fprintln(os.Stderr, "composecheck:", err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
	os.Stdout.WriteString("\n")
}
