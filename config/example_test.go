package config_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/latentworker/latentworker/config"
)

// The layers: the file, then the environment, then flags; then Validate
// reports every problem, each naming its key and where the value came from.
func Example() {
	dir, err := os.MkdirTemp("", "latentworker")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, config.DefaultFile)
	if err := os.WriteFile(path, config.Starter(), 0o644); err != nil {
		panic(err)
	}

	c, err := config.Load(path)
	if err != nil {
		panic(err)
	}
	env := map[string]string{"LATENTWORKER_INSTANCE_TYPE": "t3"}
	if err := c.ApplyEnv(func(k string) string { return env[k] }); err != nil {
		panic(err)
	}
	if err := c.Set("image.root_volume_gib", "20"); err != nil {
		panic(err)
	}
	fmt.Println(c.Validate())
	// Output:
	// worker.name = "": must be a worker name buildbot accepts: 1-50 letters, digits, '_' or '-', starting with a letter or '_', not debug, change or status
	// worker.admin_name = "": must not be empty
	// worker.admin_email = "": must not be empty
	// aws.instance_type = "t3" (from $LATENTWORKER_INSTANCE_TYPE): must be an instance type, family.size, such as t3.large or m7i-flex.xlarge
	// image.root_volume_gib = "20" (from --root-volume-gib): must be 30 to 16384 (GiB; the buildbot guide asks for 30 GB of free disk)
}
