package embedded

import (
	"encoding/json"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func marshalIndent(v any) ([]byte, error) { return json.MarshalIndent(v, "", "  ") }

func marshalSpec(s *specs.Spec) ([]byte, error) { return marshalIndent(s) }
