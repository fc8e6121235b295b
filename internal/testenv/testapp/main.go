package main

import (
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	code := 1
	if s := os.Getenv("EXIT_CODE"); s != "" {
		code, _ = strconv.Atoi(s)
		if os.Getenv("EXIT_AFTER") == "" {
			fmt.Fprintf(os.Stderr, "testapp: exiting with %d as asked\n", code)
			os.Exit(code)
		}
	}
	if d, err := time.ParseDuration(os.Getenv("EXIT_AFTER")); err == nil {
		time.AfterFunc(d, func() {
			fmt.Fprintf(os.Stderr, "testapp: exiting with %d after %s as asked\n", code, d)
			os.Exit(code)
		})
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for s := range sigs {
			if os.Getenv("IGNORE_SIGTERM") == "1" {
				fmt.Fprintf(os.Stderr, "testapp: ignoring %s\n", s)
				continue
			}
			os.Exit(0)
		}
	}()

	message := os.Getenv("MESSAGE")
	if message == "" {
		message = "hello"
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, message)
	})
	started := time.Now()
	failAfter, failLater := time.ParseDuration(os.Getenv("HEALTH_FAIL_AFTER"))
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if to := os.Getenv("HEALTH_REDIRECT"); to != "" {
			http.Redirect(w, r, to, http.StatusFound)
			return
		}
		if failLater == nil && time.Since(started) >= failAfter {
			http.Error(w, "unhealthy after "+failAfter.String()+" as asked", http.StatusInternalServerError)
			return
		}
		if os.Getenv("HEALTH") == "fail" {
			http.Error(w, "unhealthy as asked", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	http.HandleFunc("/env/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, os.Getenv(strings.TrimPrefix(r.URL.Path, "/env/")))
	})
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	fmt.Fprintf(os.Stderr, "testapp: listening on :%s\n", port)
	if err := http.ListenAndServe(":"+port, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
