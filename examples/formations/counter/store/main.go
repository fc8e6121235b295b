// Command store is a small in-memory key-value store over HTTP, the counter formation's
// internal service:
//
//	GET /kv/KEY         the value, or 404
//	PUT /kv/KEY         sets the value to the request's body
//	POST /incr/KEY      adds one to the number at KEY and answers the new number
//
// It keeps its data in $DATA_DIR/data.json (default /data, the service's volume in
// gilliam.yml), written whole on every change: a new release, a restart or a host daemon
// restart finds it again. Without a writable folder it keeps the data in memory only.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

func main() {
	var mu sync.Mutex
	dir := os.Getenv("DATA_DIR")
	if dir == "" {
		dir = "/data"
	}
	file := filepath.Join(dir, "data.json")
	data := map[string]string{}
	if b, err := os.ReadFile(file); err == nil {
		if err := json.Unmarshal(b, &data); err != nil {
			log.Fatalf("store: %s: %v", file, err)
		}
		log.Printf("store: %d key(s) read from %s", len(data), file)
	} else if !os.IsNotExist(err) {
		log.Fatalf("store: %v", err)
	}
	// save writes data (under mu) to the file, through a temporary one so that a crash
	// mid-write leaves the old file whole.
	persist := true
	save := func() error {
		if !persist {
			return nil
		}
		b, _ := json.Marshal(data)
		if err := os.WriteFile(file+".tmp", b, 0o600); err != nil {
			return err
		}
		return os.Rename(file+".tmp", file)
	}
	if err := save(); err != nil {
		log.Printf("store: %v: keeping the data in memory only", err)
		persist = false
	}
	http.HandleFunc("/kv/", func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.URL.Path, "/kv/")
		switch r.Method {
		case http.MethodGet:
			mu.Lock()
			v, ok := data[key]
			mu.Unlock()
			if !ok {
				http.NotFound(w, r)
				return
			}
			io.WriteString(w, v)
		case http.MethodPut:
			b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			mu.Lock()
			data[key] = string(b)
			err = save()
			mu.Unlock()
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		default:
			http.Error(w, "GET or PUT", http.StatusMethodNotAllowed)
		}
	})
	http.HandleFunc("/incr/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST", http.StatusMethodNotAllowed)
			return
		}
		key := strings.TrimPrefix(r.URL.Path, "/incr/")
		mu.Lock()
		n, _ := strconv.ParseInt(data[key], 10, 64)
		n++
		data[key] = strconv.FormatInt(n, 10)
		err := save()
		mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, n)
	})
	port := os.Getenv("PORT")
	if port == "" {
		port = "7000"
	}
	log.Printf("store: listening on :%s", port)
	log.Fatal(http.ListenAndServe(":"+port, nil))
}
