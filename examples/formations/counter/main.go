// Command counter counts the visits of its page in Redis. It speaks the few words of the
// Redis protocol it needs by hand, so that it builds with the standard library alone.
//
// It finds Redis at REDIS_ADDR (host:port) when set, else by asking Consul's DNS for the
// instances of the Consul service named by REDIS_SERVICE.
package main

import (
	"bufio"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		addr, err := redisAddr()
		if err != nil {
			http.Error(w, "redis: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		n, err := incr(addr, "visits")
		if err != nil {
			http.Error(w, "redis: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "hello, visitor number %d\n", n)
	})
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	log.Printf("counter: listening on :%s", port)
	log.Fatal(http.ListenAndServe(":"+port, nil))
}

// redisAddr is where Redis listens: REDIS_ADDR, or an instance of the Consul service
// REDIS_SERVICE found through a DNS SRV query (Consul registers each instance with the
// host port it is published on).
func redisAddr() (string, error) {
	if addr := os.Getenv("REDIS_ADDR"); addr != "" {
		return addr, nil
	}
	service := os.Getenv("REDIS_SERVICE")
	if service == "" {
		return "localhost:6379", nil
	}
	_, srvs, err := net.LookupSRV("", "", service+".service.consul")
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(strings.TrimSuffix(srvs[0].Target, "."), strconv.Itoa(int(srvs[0].Port))), nil
}

// incr sends INCR key to the Redis server at addr and returns the new value.
func incr(addr, key string) (int64, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(conn, "*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n", len(key), key); err != nil {
		return 0, err
	}
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return 0, err
	}
	reply = strings.TrimSuffix(reply, "\r\n")
	if !strings.HasPrefix(reply, ":") {
		return 0, fmt.Errorf("unexpected reply %q", reply)
	}
	return strconv.ParseInt(reply[1:], 10, 64)
}
