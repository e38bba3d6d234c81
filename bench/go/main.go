// A bench worker for go-dqlite's database/sql driver: the peer that
// shared/docs/bench.md states the W1, W2, W3 and W6 targets against, measured
// in the same run as this project's driver.
//
// It speaks bench.worker's protocol (see bench/worker.py): the same flags, and
// one JSON record on the last line of stdout. Driver kind "go". Built by
// scripts/build-go-bench.sh from Debian's golang-go and
// golang-github-canonical-go-dqlite-dev, in GOPATH mode (no module download).
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/canonical/go-dqlite/client"
	"github.com/canonical/go-dqlite/driver"
)

const (
	pointSQL    = "SELECT id, name, v FROM bench WHERE id = ?"
	fetchSQL    = "SELECT id, name, v, b, n FROM bench"
	w1Queries   = 5000
	w3Rows      = 10000
	concurrency = 8   // W6 goroutines
	perWorker   = 500 // point queries per goroutine
)

// Version of the go-dqlite sources this is built against (Debian's package).
var goDqliteVersion = "unknown"

type measurement struct {
	wall, user, sys float64
	count           int
}

type params struct {
	rows int
	rng  *rand.Rand
}

func (p *params) ids(n int) []int64 {
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = p.rng.Int63n(int64(p.rows)) + 1
	}
	return ids
}

func cpuSeconds() (user, sys float64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return float64(ru.Utime.Nano()) / 1e9, float64(ru.Stime.Nano()) / 1e9
}

// measure times body: wall clock and this process's CPU (all threads), as bench.workloads.measure.
func measure(body func() int) measurement {
	u0, s0 := cpuSeconds()
	t0 := time.Now()
	count := body()
	wall := time.Since(t0).Seconds()
	u1, s1 := cpuSeconds()
	return measurement{wall: wall, user: u1 - u0, sys: s1 - s0, count: count}
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func check(what string, got, want int) {
	if got != want {
		panic(fmt.Sprintf("%s: got %d, expected %d", what, got, want))
	}
}

// drain scans every row of rows into dest and closes them; the rows it read.
func drain(rows *sql.Rows, err error, dest ...interface{}) int {
	must(err)
	got := 0
	for rows.Next() {
		must(rows.Scan(dest...))
		got++
	}
	must(rows.Err())
	must(rows.Close())
	return got
}

// pointQueries runs one point query per id through stmt; the rows it read.
func pointQueries(stmt *sql.Stmt, ids []int64) int {
	got := 0
	var id int64
	var name string
	var v float64
	for _, i := range ids {
		rows, err := stmt.Query(i)
		got += drain(rows, err, &id, &name, &v)
	}
	return got
}

// w1: 5,000 sequential point queries on one connection, prepared once.
func w1(db *sql.DB, p *params) measurement {
	db.SetMaxOpenConns(1)
	stmt, err := db.Prepare(pointSQL)
	must(err)
	pointQueries(stmt, p.ids(200))
	ids := p.ids(w1Queries)
	m := measure(func() int { return pointQueries(stmt, ids) })
	check("W1", m.count, len(ids))
	return m
}

func fetchAll(db *sql.DB) int {
	var id int64
	var name string
	var v float64
	var b []byte
	var n sql.NullInt64
	rows, err := db.Query(fetchSQL)
	return drain(rows, err, &id, &name, &v, &b, &n)
}

// w2: every row of the table (5 columns), after one unmeasured run.
func w2(db *sql.DB, p *params) measurement {
	db.SetMaxOpenConns(1)
	check("W2 warm-up", fetchAll(db), p.rows)
	m := measure(func() int { return fetchAll(db) })
	check("W2", m.count, p.rows)
	return m
}

// w3: 10,000 rows into a fresh table in one transaction, one prepared EXEC per row.
func w3(db *sql.DB, p *params) measurement {
	db.SetMaxOpenConns(1)
	table := fmt.Sprintf("w3_go_%d", os.Getpid())
	_, err := db.Exec("DROP TABLE IF EXISTS " + table)
	must(err)
	_, err = db.Exec("CREATE TABLE " + table +
		" (id INTEGER PRIMARY KEY, name TEXT, v REAL, b BLOB, n INTEGER NULL, flag BOOLEAN, ts DATETIME)")
	must(err)
	epoch := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	type row struct {
		name string
		b    []byte
		ts   string
	}
	data := make([]row, w3Rows)
	for i := range data {
		k := i + 1
		b := make([]byte, 16)
		p.rng.Read(b)
		ts := epoch.Add(time.Duration(k)*time.Second + time.Duration((k*7919)%1000000)*time.Microsecond)
		data[i] = row{fmt.Sprintf("name-%08d", k), b, ts.Format("2006-01-02 15:04:05.000000")}
	}
	insert := "INSERT INTO " + table + " (id, name, v, b, n, flag, ts) VALUES (?, ?, ?, ?, ?, ?, ?)"
	m := measure(func() int {
		tx, err := db.Begin()
		must(err)
		stmt, err := tx.Prepare(insert)
		must(err)
		for i, r := range data {
			k := i + 1
			_, err := stmt.Exec(k, r.name, float64(k)*0.5, r.b, nil, k%2, r.ts)
			must(err)
		}
		must(stmt.Close())
		must(tx.Commit())
		return len(data)
	})
	var n int
	must(db.QueryRow("SELECT count(*) FROM " + table).Scan(&n))
	check("W3", n, w3Rows)
	_, err = db.Exec("DROP TABLE " + table)
	must(err)
	return m
}

// w6: 8 goroutines x 500 point queries through database/sql's pool (8 connections),
// 10 warm-up queries each before a common start.
func w6(db *sql.DB, p *params) measurement {
	db.SetMaxOpenConns(concurrency)
	db.SetMaxIdleConns(concurrency)
	stmt, err := db.Prepare(pointSQL)
	must(err)
	ids := make([][]int64, concurrency)
	for k := range ids {
		ids[k] = p.ids(perWorker)
	}
	var ready, start, done sync.WaitGroup
	ready.Add(concurrency)
	start.Add(1)
	done.Add(concurrency)
	got := make([]int, concurrency)
	for k := 0; k < concurrency; k++ {
		go func(k int) {
			defer done.Done()
			pointQueries(stmt, ids[k][:10])
			ready.Done()
			start.Wait()
			got[k] = pointQueries(stmt, ids[k])
		}(k)
	}
	ready.Wait()
	m := measure(func() int {
		start.Done()
		done.Wait()
		total := 0
		for _, g := range got {
			total += g
		}
		return total
	})
	check("W6", m.count, concurrency*perWorker)
	return m
}

var workloads = map[string]struct {
	unit string
	run  func(*sql.DB, *params) measurement
}{
	"W1": {"q/s", w1},
	"W2": {"s", w2},
	"W3": {"rows/s", w3},
	"W6": {"q/s", w6},
}

func open(addresses []string, database string) *sql.DB {
	store := client.NewInmemNodeStore()
	infos := make([]client.NodeInfo, len(addresses))
	for i, a := range addresses {
		infos[i] = client.NodeInfo{Address: a}
	}
	must(store.Set(context.Background(), infos))
	drv, err := driver.New(store, driver.WithConnectionTimeout(10*time.Second))
	must(err)
	sql.Register("dqlite", drv)
	db, err := sql.Open("dqlite", database)
	must(err)
	return db
}

func main() {
	workload := flag.String("workload", "", "W1, W2, W3 or W6")
	driverKind := flag.String("driver", "go", "driver kind (only go)")
	flag.String("client", "go-dqlite", "ignored: this worker measures go-dqlite")
	addresses := flag.String("addresses", "", "cluster nodes, comma-separated")
	database := flag.String("database", "bench", "database name")
	rows := flag.Int("rows", 100000, "rows in the bench table")
	round := flag.Int("round", 1, "round number (also seeds the ids)")
	flag.String("sqlite", "", "ignored")
	loop := flag.String("loop", "asyncio", "ignored")
	flag.String("profile", "", "ignored")
	flag.Parse()

	record := map[string]interface{}{
		"protocol": 1, "workload": *workload, "driver": *driverKind, "client": "go-dqlite",
		"version": "go-dqlite " + goDqliteVersion + " database/sql (" + runtime.Version() + ")",
		"python":  nil, "round": *round, "loop": *loop, "status": "ok", "reason": nil,
	}
	status := 0
	func() {
		defer func() {
			if r := recover(); r != nil {
				record["status"], record["reason"] = "error", fmt.Sprint(r)
				status = 1
			}
		}()
		w, ok := workloads[*workload]
		if !ok || *driverKind != "go" {
			record["status"] = "skipped"
			record["reason"] = fmt.Sprintf("go-dqlite worker has no %s through %q", *workload, *driverKind)
			return
		}
		db := open(strings.Split(*addresses, ","), *database)
		defer db.Close()
		m := w.run(db, &params{rows: *rows, rng: rand.New(rand.NewSource(int64(*round)))})
		value := m.wall
		if w.unit != "s" {
			value = float64(m.count) / m.wall
		}
		record["unit"], record["value"] = w.unit, value
		record["wall"], record["user"], record["sys"] = m.wall, m.user, m.sys
		record["cpu"], record["count"] = m.user+m.sys, m.count
		record["extra"] = map[string]interface{}{"gomaxprocs": runtime.GOMAXPROCS(0)}
	}()
	out, err := json.Marshal(record)
	must(err)
	fmt.Println(string(out))
	os.Exit(status)
}
