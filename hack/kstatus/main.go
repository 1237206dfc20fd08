// kstatus: what sigs.k8s.io/cli-utils' kstatus (the library Flux, Helm 4 and kpt read resource
// status with) says of one object. Reads the object as JSON on stdin; prints
// {"status": "Current|InProgress|Failed|Terminating|...", "message": "..."}.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(data); err != nil {
		fmt.Fprintln(os.Stderr, "not a Kubernetes object:", err)
		os.Exit(2)
	}
	res, err := status.Compute(u)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, _ := json.Marshal(map[string]string{"status": res.Status.String(), "message": res.Message})
	fmt.Println(string(out))
}
