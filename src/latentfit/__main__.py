from latentfit.cli import main

main()
