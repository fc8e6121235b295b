// Command api serves a quote as JSON, a different one each time.
package main

import (
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"sync/atomic"
)

var quotes = []string{
	"Simplicity is prerequisite for reliability.",
	"Make it work, make it right, make it fast.",
	"Clear is better than clever.",
	"A little copying is better than a little dependency.",
}

func main() {
	var next atomic.Uint64
	http.HandleFunc("/quote", func(w http.ResponseWriter, r *http.Request) {
		q := quotes[(next.Add(1)-1)%uint64(len(quotes))]
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"quote": q})
	})
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	log.Printf("api: listening on :%s", port)
	log.Fatal(http.ListenAndServe(":"+port, nil))
}
