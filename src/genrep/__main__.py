from genrep.cli import main

main()
