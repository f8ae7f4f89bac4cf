package server

import (
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/component-base/featuregate"
)

// ContainerCheckpoint enables POST /checkpoint/...; Beta and on by default,
// as in the kubelet since 1.30.
const ContainerCheckpoint featuregate.Feature = "ContainerCheckpoint"

// NewFeatureGate returns ckpt's feature gates with their defaults. Wire it
// to the command line with fg.AddFlag(flags), which adds --feature-gates
// (e.g. --feature-gates=ContainerCheckpoint=false), and read it after
// parsing with fg.Enabled(ContainerCheckpoint).
func NewFeatureGate() featuregate.MutableFeatureGate {
	fg := featuregate.NewFeatureGate()
	utilruntime.Must(fg.Add(map[featuregate.Feature]featuregate.FeatureSpec{
		ContainerCheckpoint: {Default: true, PreRelease: featuregate.Beta},
	}))
	return fg
}
