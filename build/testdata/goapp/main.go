// Command goapp is the Go service build's tests and benchmarks build: an HTTP server on
// $PORT answering every request with its message.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
)

const message = "hello from goapp"

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, message)
	})
	log.Fatal(http.ListenAndServe(":"+port, nil))
}
