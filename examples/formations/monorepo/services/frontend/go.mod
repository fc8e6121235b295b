module example.com/quotes/frontend

go 1.26
