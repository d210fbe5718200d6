from segrefine.cli import main

main()
