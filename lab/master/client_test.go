package master

import (
	"encoding/json"
	"testing"
)

func TestBuildJSON(t *testing.T) {
	tests := []struct {
		in   string
		want Build
	}{
		{`{"buildid": 7, "number": 2, "builderid": 1, "buildrequestid": 3, "workerid": 4, "complete": true, "results": 0, "state_string": "build successful"}`,
			Build{BuildID: 7, Number: 2, BuilderID: 1, BuildRequestID: 3, WorkerID: 4, Complete: true, Results: Success, StateString: "build successful"}},
		{`{"buildid": 8, "complete": false, "results": null}`, Build{BuildID: 8, Results: NoResults}},
		{`{"buildid": 9, "complete": true, "results": 2}`, Build{BuildID: 9, Complete: true, Results: Failure}},
	}
	for _, tt := range tests {
		var got Build
		if err := json.Unmarshal([]byte(tt.in), &got); err != nil {
			t.Errorf("Unmarshal(%s): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Unmarshal(%s) = %+v; want %+v", tt.in, got, tt.want)
		}
		if got.Succeeded() != (tt.want.Complete && tt.want.Results == Success) {
			t.Errorf("Build %+v: Succeeded() = %v", got, got.Succeeded())
		}
	}
}

func TestResultString(t *testing.T) {
	for code, want := range map[int]string{Success: "success", Failure: "failure", Cancelled: "cancelled", 42: "result 42", NoResults: "result -1"} {
		if got := ResultString(code); got != want {
			t.Errorf("ResultString(%d) = %q; want %q", code, got, want)
		}
	}
}
