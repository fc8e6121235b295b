// Command web counts the visits of its page in the formation's store, and passes keys
// through to it:
//
//	GET /               "hello, visitor number N"
//	GET /kv/KEY         the store's value
//	PUT /kv/KEY         sets the store's value
//
// It reaches the store at STORE_ADDR (host:port), which the platform sets to the store's
// name in the formation (store:7000): the same on every host, whichever host the store's
// instances run on.
//
// `app migrate` is its release phase (gilliam.yml): run once per release before the
// release serves, it brings the store's data to the schema this release reads (here it
// records the schema version, key schema) and exits; it can run again safely.
package main

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"time"
)

var client = &http.Client{Timeout: 3 * time.Second}

func store() string {
	if addr := os.Getenv("STORE_ADDR"); addr != "" {
		return "http://" + addr
	}
	return "http://store:7000"
}

// schema is the version of the store's data this release reads.
const schema = "1"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "migrate" {
		migrate()
		return
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		resp, err := client.Post(store()+"/incr/visits", "text/plain", nil)
		if err != nil {
			http.Error(w, "store: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		fmt.Fprintf(w, "hello, visitor number %s\n", strings.TrimSpace(string(b)))
	})
	http.HandleFunc("/kv/", func(w http.ResponseWriter, r *http.Request) {
		var body io.Reader
		if r.Method == http.MethodPut {
			b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = bytes.NewReader(b)
		}
		req, err := http.NewRequest(r.Method, store()+r.URL.Path, body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, "store: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	})
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	log.Printf("web: listening on :%s", port)
	log.Fatal(http.ListenAndServe(":"+port, nil))
}

// migrate records the schema version in the store, trying for a minute while the store
// starts; it exits 1 when it cannot, which fails the release phase and keeps the running
// release.
func migrate() {
	var err error
	for i := 0; i < 30; i++ {
		var req *http.Request
		req, err = http.NewRequest(http.MethodPut, store()+"/kv/schema", strings.NewReader(schema))
		if err == nil {
			var resp *http.Response
			if resp, err = client.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusNoContent {
					fmt.Printf("migrate: store at schema %s\n", schema)
					return
				}
				err = fmt.Errorf("store answered %s", resp.Status)
			}
		}
		time.Sleep(2 * time.Second)
	}
	fmt.Fprintf(os.Stderr, "migrate: %v\n", err)
	os.Exit(1)
}
