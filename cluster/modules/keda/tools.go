//go:build tools

// The programs cluster/build.sh builds from this module (kept in go.mod by this file).
package tools

import (
	_ "github.com/kedacore/keda/v2/cmd/adapter"
	_ "github.com/kedacore/keda/v2/cmd/operator"
)
